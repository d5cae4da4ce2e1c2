"""wire.py agrees byte for byte with the generated protobuf classes."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2, timestamp_pb2

from runwasm.shim.api.runtime.bootstrap.v1 import bootstrap_pb2
from runwasm.shim.api.runtime.task.v3 import shim_pb2
from runwasm.shim.api.types import introspection_pb2
from runwasm.shim.common import wire
from runwasm.shim.common.version import REVISION, VERSION
from runwasm.shim.entry import bootstrap, features, info

OPTIONS = any_pb2.Any(type_url="runtimeoptions.v1.Options", value=b"\x0a\x03abc")


def _params(**kw: object) -> bootstrap_pb2.BootstrapParams:
    base: dict[str, object] = dict(
        instance_id="c1", namespace="default", log_level=bootstrap_pb2.LOG_LEVEL_DEBUG,
        containerd_version="2.3.4+unknown", containerd_ttrpc_address="/run/containerd/containerd.sock.ttrpc",
        containerd_grpc_address="/run/containerd/containerd.sock", containerd_binary="/usr/bin/containerd",
        socket_dir="/run/containerd/s")
    base.update(kw)
    return bootstrap_pb2.BootstrapParams(**base)  # type: ignore[arg-type,unused-ignore]


@pytest.mark.parametrize("level", [-8, -4, 0, 4, 8, 10, 12, -100, 1 << 30])
def test_decode_params_matches_generated(level: int) -> None:
    msg = _params(log_level=level, extensions=[bootstrap_pb2.Extension(value=OPTIONS)])
    got = bootstrap.decode_params(msg.SerializeToString())
    assert got == bootstrap.BootstrapParams(
        instance_id="c1", namespace="default", log_level=level, containerd_version="2.3.4+unknown",
        containerd_ttrpc_address="/run/containerd/containerd.sock.ttrpc",
        containerd_grpc_address="/run/containerd/containerd.sock", containerd_binary="/usr/bin/containerd",
        extensions=(("runtimeoptions.v1.Options", b"\x0a\x03abc"),), socket_dir="/run/containerd/s")


def test_decode_params_socket_dir_presence() -> None:
    msg = _params()
    msg.ClearField("socket_dir")
    assert bootstrap.decode_params(msg.SerializeToString()).socket_dir is None
    assert bootstrap.decode_params(_params(socket_dir="").SerializeToString()).socket_dir == ""


@pytest.mark.parametrize("value", [-1, -4, -8, -(1 << 31)])
def test_negative_varint_is_ten_bytes(value: int) -> None:
    enc = wire.enc_varint(value)
    assert len(enc) == 10
    ref = bootstrap_pb2.BootstrapParams(log_level=value).SerializeToString()  # type: ignore[arg-type,unused-ignore]
    assert ref == b"\x18" + enc
    assert wire.expect_int(3, wire.VARINT, wire._varint(enc, 0)[0], signed=True) == value


@pytest.mark.parametrize(("version", "address"), [(3, "unix:///run/containerd/s/0123"), (2, "unix:///x"),
                                                  (3, "unix:///" + "a" * 300)])
def test_bootstrap_result_matches_generated(version: int, address: str) -> None:
    ref = bootstrap_pb2.BootstrapResult(version=version, address=address, protocol="ttrpc").SerializeToString()
    assert bootstrap.encode_result(address, version=version) == ref


def test_bootstrap_result_doc_vector() -> None:
    out = bootstrap.encode_result("unix:///run/containerd/s/0123")
    assert out.startswith(bytes.fromhex("0803121d") + b"unix:///")
    assert out.endswith(bytes.fromhex("1a05") + b"ttrpc")


@pytest.mark.parametrize(("pid", "status", "sec", "nanos"), [
    (0, 137, 0, 0), (1234, 0, 1_700_000_000, 5), (1, 255, 1_700_000_000, 999_999_999), ((1 << 31) - 1, 143, 1, 0)])
def test_delete_response_matches_generated(pid: int, status: int, sec: int, nanos: int) -> None:
    ours = wire.enc_int(1, pid) + wire.enc_int(2, status) + wire.enc_timestamp(3, sec, nanos)
    ref = shim_pb2.DeleteResponse(pid=pid, exit_status=status,
                                  exited_at=timestamp_pb2.Timestamp(seconds=sec, nanos=nanos)).SerializeToString()
    assert ours == ref


# containerd 2.2+ leaves these mount types to the shim (shim/common/rootfs_plan.py)
ANNOTATIONS = {"containerd.io/runtime-allow-mounts": "erofs,format/*,mkdir/*"}


def test_runtime_info_matches_generated() -> None:
    feats = any_pb2.Any(type_url=features.TYPE_URL, value=features.encode())
    ref = introspection_pb2.RuntimeInfo(
        name="io.containerd.runwasm.v1",
        version=introspection_pb2.RuntimeVersion(version=VERSION, revision=REVISION),
        options=OPTIONS, features=feats, annotations=ANNOTATIONS).SerializeToString()
    assert info.run(OPTIONS.SerializeToString()) == ref
    ref_no = introspection_pb2.RuntimeInfo(
        name="io.containerd.runwasm.v1",
        version=introspection_pb2.RuntimeVersion(version=VERSION, revision=REVISION),
        features=feats, annotations=ANNOTATIONS).SerializeToString()
    assert info.run(b"") == ref_no
    assert info.run(b"\xff\xff") == ref_no  # not an Any: not echoed


def test_any_round_trip() -> None:
    enc = wire.enc_any(1, OPTIONS.type_url, OPTIONS.value)
    assert enc[2:] == OPTIONS.SerializeToString()
    assert wire.dec_any(OPTIONS.SerializeToString()) == (OPTIONS.type_url, OPTIONS.value)


def test_zero_values_omitted_like_proto3() -> None:
    assert wire.enc_int(1, 0) == b""
    assert wire.enc_str(2, "") == b""
    assert wire.enc_timestamp(3, 0, 0) == b"\x1a\x00"


def test_unknown_fields_skipped() -> None:
    data = _params().SerializeToString() + wire.enc_varint(99 << 3 | wire.I64) + b"\x00" * 8 \
        + wire.enc_varint(98 << 3 | wire.I32) + b"\x00" * 4 + wire.enc_str(97, "x")
    assert bootstrap.decode_params(data).instance_id == "c1"


@pytest.mark.parametrize("data", [
    b"\x0a\x05abc",           # length beyond the end
    b"\x0a",                  # missing length
    b"\x18\xff\xff",          # truncated varint
    b"\x19\x00\x00",          # truncated fixed64
    b"\x1d\x00",              # truncated fixed32
    b"\x80",                  # truncated key
])
def test_truncated_is_wire_error(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        list(wire.fields(data))


def test_truncated_real_message() -> None:
    full = _params().SerializeToString()
    for cut in (1, 5, len(full) - 1):
        with pytest.raises(wire.WireError):
            bootstrap.decode_params(full[:cut])


@pytest.mark.parametrize("data", [
    b"\x08\x01",              # instance_id (string) as a varint
    b"\x1a\x01x",             # log_level (enum) as length-delimited
    b"\x42\x02\x08\x01",      # extension whose Any is a varint
    b"\x4d\x00\x00\x00\x00",  # socket_dir as fixed32
])
def test_wrong_wire_type_is_wire_error(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        bootstrap.decode_params(data)


@pytest.mark.parametrize("data", [b"/run/x", b"{}", b"\x0b\x0c", b"\x0f", b"\x00\x01"])
def test_invalid_tags(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        list(wire.fields(data))


def test_varint_too_long() -> None:
    with pytest.raises(wire.WireError, match="too long"):
        wire._varint(b"\xff" * 11, 0)


def test_invalid_utf8() -> None:
    with pytest.raises(wire.WireError, match="UTF-8"):
        bootstrap.decode_params(b"\x0a\x01\xff")
