"""Fuzz: the hand-written protobuf codec of the short-lived entry points (``shim/common/wire.py``,
``shim/entry/bootstrap.py``, the options ``Any`` of ``shim/common/options.py``), against the generated
protobuf classes as the oracle.

Properties: any bytes decode or raise ``WireError`` (nothing else); whatever the real protobuf
runtime encodes, ``decode_params`` reads back identically; ``encode_result`` is read back by
protobuf; ``detect`` (the start path's protocol choice) never raises on any stdin.
"""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from runwasm.shim.api.runtime.bootstrap.v1 import bootstrap_pb2
from runwasm.shim.common import wire
from runwasm.shim.common.errors import InvalidArgumentError
from runwasm.shim.common.options import parse as parse_options
from runwasm.shim.entry import bootstrap
from runwasm.shim.entry.flags import Flags

pytestmark = pytest.mark.fuzz

text = st.text(max_size=40)
params = st.builds(
    bootstrap_pb2.BootstrapParams,
    instance_id=text, namespace=text, log_level=st.sampled_from([0, 1, 2, 3, 4, 5, 6]),
    containerd_version=text, containerd_ttrpc_address=text, containerd_grpc_address=text,
    containerd_binary=text,
    extensions=st.lists(st.builds(lambda url, val: bootstrap_pb2.Extension(value=any_pb2.Any(type_url=url, value=val)),
                                  text, st.binary(max_size=40)), max_size=3),
)


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    try:
        got = bootstrap.decode_params(data)
    except wire.WireError:
        return
    try:
        want = bootstrap_pb2.BootstrapParams.FromString(data)
    except DecodeError:
        return  # protobuf refuses more (e.g. group wire types inside unknown fields); ours may not
    assert got.instance_id == want.instance_id
    assert got.namespace == want.namespace
    assert got.containerd_version == want.containerd_version


@given(params, st.booleans())
def test_what_protobuf_encodes_decodes_identically(msg: bootstrap_pb2.BootstrapParams, with_socket_dir: bool) -> None:
    if with_socket_dir:
        msg.socket_dir = "/run/x"
    got = bootstrap.decode_params(msg.SerializeToString())
    assert (got.instance_id, got.namespace, got.log_level, got.containerd_version, got.containerd_ttrpc_address,
            got.containerd_grpc_address, got.containerd_binary) == (
        msg.instance_id, msg.namespace, msg.log_level, msg.containerd_version, msg.containerd_ttrpc_address,
        msg.containerd_grpc_address, msg.containerd_binary)
    assert got.extensions == tuple((e.value.type_url, e.value.value) for e in msg.extensions)
    assert got.socket_dir == (msg.socket_dir if msg.HasField("socket_dir") else None)


@given(text, st.integers(0, 2**31 - 1), text)
def test_encoded_result_reads_back_with_protobuf(address: str, version: int, protocol: str) -> None:
    res = bootstrap_pb2.BootstrapResult.FromString(bootstrap.encode_result(address, version=version, protocol=protocol))
    assert (res.address, res.version, res.protocol) == (address, version, protocol)


@given(st.one_of(st.binary(max_size=200), params.map(lambda m: m.SerializeToString())), text, text)
def test_detect_never_raises(stdin: bytes, cid: str, namespace: str) -> None:
    settings = bootstrap.detect(Flags(id=cid, namespace=namespace), stdin, {}, "/")
    assert settings.mode in ("bootstrap", "legacy")


@given(text, st.binary(max_size=200))
def test_options_any_is_parsed_or_refused_with_invalid_argument(type_url: str, value: bytes) -> None:
    for url in (type_url, "runtimeoptions.v1.Options"):
        try:
            parse_options((url, value))
        except InvalidArgumentError:
            pass
