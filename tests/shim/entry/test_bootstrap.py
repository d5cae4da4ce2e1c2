"""2.3 bootstrap vs legacy start detection (shim-protocol.md §4.1-4.3, §4.8)."""

from __future__ import annotations

import os

import pytest
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from runwasm.shim.api.runtime.bootstrap.v1 import bootstrap_pb2
from runwasm.shim.api.types.runtimeoptions.v1 import api_pb2 as runtimeoptions_pb2
from runwasm.shim.entry import bootstrap
from runwasm.shim.entry.flags import Flags, parse

ENV = {"TTRPC_ADDRESS": "unix:///run/containerd/containerd.sock.ttrpc", "GRPC_ADDRESS": "/env/grpc.sock",
       "NAMESPACE": "envns"}


def _flags(cid: str = "c1", ns: str = "default", *extra: str) -> Flags:
    return parse(["-namespace", ns, "-address", "/run/containerd/containerd.sock", "-publish-binary",
                  "/usr/bin/containerd", "-id", cid, *extra, "start"])


def _params(**kw: object) -> bytes:
    base: dict[str, object] = dict(
        instance_id="c1", namespace="default", log_level=bootstrap_pb2.LOG_LEVEL_INFO,
        containerd_version="2.3.4+unknown", containerd_ttrpc_address="/p/containerd.sock.ttrpc",
        containerd_grpc_address="/p/containerd.sock", containerd_binary="/p/bin/containerd",
        socket_dir="/p/s")
    base.update(kw)
    data: bytes = bootstrap_pb2.BootstrapParams(**base).SerializeToString()  # type: ignore[arg-type,unused-ignore]
    return data


def test_real_23_params() -> None:
    opts = any_pb2.Any(type_url="runtimeoptions.v1.Options", value=b"\x12\x05/x.tl")
    data = _params(log_level=bootstrap_pb2.LOG_LEVEL_DEBUG, extensions=[bootstrap_pb2.Extension(value=opts)])
    s = bootstrap.detect(_flags(), data, ENV, "/bundle")
    assert s.mode == "bootstrap"
    assert (s.id, s.namespace, s.bundle) == ("c1", "default", "/bundle")
    assert s.ttrpc_address == "/p/containerd.sock.ttrpc"
    assert s.grpc_address == "/p/containerd.sock"
    assert s.containerd_binary == "/p/bin/containerd"
    assert s.containerd_version == "2.3.4+unknown"
    assert s.socket_dir == "/p/s"
    assert s.debug is True
    assert s.options == ("runtimeoptions.v1.Options", b"\x12\x05/x.tl")


@pytest.mark.parametrize(("level", "debug"), [(-8, True), (-4, True), (-3, False), (0, False), (4, False)])
def test_log_level_debug_threshold(level: int, debug: bool) -> None:
    assert bootstrap.detect(_flags(), _params(log_level=level), ENV, "/b").debug is debug


def test_debug_flag_wins_in_bootstrap_mode() -> None:
    s = bootstrap.detect(_flags("c1", "default", "-debug"), _params(), ENV, "/b")
    assert (s.mode, s.debug) == ("bootstrap", True)


def test_socket_dir_default_when_absent() -> None:
    msg = bootstrap_pb2.BootstrapParams.FromString(_params())
    msg.ClearField("socket_dir")
    s = bootstrap.detect(_flags(), msg.SerializeToString(), ENV, "/b")
    assert s.mode == "bootstrap"
    assert s.socket_dir == bootstrap.DEFAULT_SOCKET_DIR == "/run/containerd/s"


def test_bundle_flag_overrides_cwd() -> None:
    s = bootstrap.detect(_flags("c1", "default", "-bundle", "/elsewhere"), _params(), ENV, "/cwd")
    assert s.bundle == "/elsewhere"


def test_unix_prefix_stripped_from_ttrpc_address() -> None:
    s = bootstrap.detect(_flags(), _params(containerd_ttrpc_address="unix:///p/t.sock"), ENV, "/b")
    assert s.ttrpc_address == "/p/t.sock"


@pytest.mark.parametrize("kw", [{"instance_id": "other"}, {"namespace": "other"}, {"containerd_version": ""}])
def test_identity_mismatch_is_legacy(kw: dict[str, str]) -> None:
    s = bootstrap.detect(_flags(), _params(**kw), ENV, "/b")
    assert s.mode == "legacy"
    assert (s.id, s.namespace) == ("c1", "default")


def test_legacy_options_any_that_decodes_as_params() -> None:
    """The §4.8 trap: an options Any is (1: type_url, 2: value) = (instance_id, namespace)."""
    opts = runtimeoptions_pb2.Options(config_path="/etc/runwasm.toml")
    any_ = any_pb2.Any(type_url="runtimeoptions.v1.Options", value=opts.SerializeToString())
    data = any_.SerializeToString()
    as_params = bootstrap_pb2.BootstrapParams.FromString(data)  # the generated class accepts it too
    assert as_params.instance_id == "runtimeoptions.v1.Options"
    assert bootstrap.decode_params(data).instance_id == "runtimeoptions.v1.Options"

    s = bootstrap.detect(_flags(), data, ENV, "/b")
    assert s.mode == "legacy"
    assert s.options == ("runtimeoptions.v1.Options", opts.SerializeToString())
    assert s.id == "c1"

    # worst case: -id and -namespace happen to equal the decoded fields; field 4 still decides
    adversarial = Flags(id=as_params.instance_id, namespace=as_params.namespace, action="start")
    s = bootstrap.detect(adversarial, data, ENV, "/b")
    assert s.mode == "legacy"
    assert s.options == ("runtimeoptions.v1.Options", opts.SerializeToString())


def test_empty_stdin_is_legacy() -> None:
    env = dict(ENV, RUNWASM_SOCKET_DIR="/tmp/socks")
    s = bootstrap.detect(_flags("c1", "default", "-debug"), b"", env, "/b")
    assert s.mode == "legacy"
    assert s.options is None
    assert s.ttrpc_address == "/run/containerd/containerd.sock.ttrpc"
    assert s.grpc_address == "/run/containerd/containerd.sock"
    assert s.containerd_binary == "/usr/bin/containerd"
    assert s.containerd_version == ""
    assert s.debug is True
    assert s.socket_dir == "/tmp/socks"


def test_legacy_defaults_from_env() -> None:
    s = bootstrap.detect(Flags(id="c1", action="start"), b"", ENV, "/b")
    assert (s.namespace, s.grpc_address, s.socket_dir) == ("envns", "/env/grpc.sock", "/run/containerd/s")


@pytest.mark.parametrize("data", [b"\xff\xff\xff", b"/run/containerd/s/x", b"{\"version\": 3}", b"\x0a\x50abc",
                                  os.urandom(0) + b"\x07"])
def test_garbage_is_legacy_without_options(data: bytes) -> None:
    s = bootstrap.detect(_flags(), data, ENV, "/b")
    assert s.mode == "legacy"
    assert s.options is None


def test_result_has_no_trailing_newline_and_parses() -> None:
    out = bootstrap.encode_result("unix:///run/containerd/s/abc")
    assert not out.endswith(b"\n")
    res = bootstrap_pb2.BootstrapResult.FromString(out)
    assert (res.version, res.address, res.protocol) == (3, "unix:///run/containerd/s/abc", "ttrpc")
    with pytest.raises(DecodeError):  # why it matters: containerd would fall back to "address"
        bootstrap_pb2.BootstrapResult.FromString(out + b"\n")


def test_read_stdin_pipe_and_limit() -> None:
    r, w = os.pipe()
    os.write(w, b"abc")
    os.close(w)
    try:
        assert bootstrap.read_stdin(r) == b"abc"
    finally:
        os.close(r)
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        assert bootstrap.read_stdin(fd) == b""
    finally:
        os.close(fd)
    assert bootstrap.read_stdin(987654) == b""  # a closed stdin is empty
