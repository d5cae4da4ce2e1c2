"""Runtime options (runtimeoptions.v1.Options with TOML): parsing, errors, precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from runwasm.shim.api.types.runtimeoptions.v1 import api_pb2
from runwasm.shim.common import options, wire
from runwasm.shim.common.errors import InvalidArgumentError


def _any(body: str = "", path: str = "") -> tuple[str, bytes]:
    return "runtimeoptions.v1.Options", api_pb2.Options(config_body=body, config_path=path).SerializeToString()


def test_none_and_empty() -> None:
    assert options.parse(None) is None
    parsed = options.parse(_any(""))
    assert parsed is not None
    assert parsed.options == options.RuntimeOptions()
    assert parsed.given == frozenset()


def test_body_keys() -> None:
    parsed = options.parse(_any('Executor = "wasm"\nWasmCacheDir = "/c"\nWasmRootfsReadonly = true\nDebug = true\n'
                                'StandbySeconds = 30'))
    assert parsed is not None
    assert parsed.options == options.RuntimeOptions("wasm", "/c", True, True, 30)
    assert parsed.given == {"executor", "wasm_cache_dir", "wasm_rootfs_readonly", "debug", "standby_seconds"}


def test_config_path_file(tmp_path: Path) -> None:
    f = tmp_path / "runwasm.toml"
    f.write_text('Executor = "linux"\n')
    parsed = options.parse(_any(path=str(f)))
    assert parsed is not None
    assert parsed.options.executor == "linux"


def test_type_url_with_prefix_is_accepted() -> None:
    _t, value = _any('Debug = true')
    assert options.parse(("type.googleapis.com/runtimeoptions.v1.Options", value)) is not None


@pytest.mark.parametrize(("any_", "message"), [
    (("containerd.runhcs.v1.Options", b""), "unsupported runtime options type 'containerd.runhcs.v1.Options'"),
    (_any('Executor = "wasm'), "invalid TOML in runtime options config_body"),
    (_any('Bogus = 1\nOther = 2'), "unknown keys in runtime options config_body: ['Bogus', 'Other']"),
    (_any('Debug = "yes"'), "invalid Debug in runtime options config_body: expected a bool, got 'yes'"),
    (_any('Executor = "native"'), "invalid Executor in runtime options config_body: expected one of"),
    (_any('WasmCacheDir = "relative"'), "expected an absolute path, got 'relative'"),
    (_any('StandbySeconds = true'), "invalid StandbySeconds in runtime options config_body: expected an int, got True"),
    (_any('StandbySeconds = 7200'), "invalid StandbySeconds in runtime options config_body: expected 0 to 3600, got 7200"),
    (_any(path="/nonexistent/runwasm.toml"), "failed to read runtime options config_path '/nonexistent/runwasm.toml'"),
    (("runtimeoptions.v1.Options", b"\x0a\x05ab"), "does not decode"),
])
def test_errors_name_what_was_expected(any_: tuple[str, bytes], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        options.parse(any_)
    assert message in str(info.value)


def test_create_options_override_only_what_they_set() -> None:
    base = options.RuntimeOptions(executor="wasm", wasm_cache_dir="/base")
    parsed = options.parse(_any('WasmCacheDir = "/override"'))
    assert parsed is not None
    merged = base.merged(parsed.options, parsed.given)
    assert merged == options.RuntimeOptions(executor="wasm", wasm_cache_dir="/override")


def test_wire_decoder_agrees_with_protobuf() -> None:
    value = api_pb2.Options(type_url="x", config_path="/p", config_body="b").SerializeToString()
    fields = {num: v for num, _wt, v in wire.fields(value)}
    assert fields == {1: b"x", 2: b"/p", 3: b"b"}


def test_wasm_sandbox_keys_are_parsed_and_checked() -> None:
    from runwasm.shim.common.options import parse_toml

    parsed = parse_toml('WasmFuel = 7\nWasmPreopens = ["/srv:/data:rw"]\nDebug = true\n', "t")
    assert parsed.options.wasm_sandbox is not None
    assert parsed.options.wasm_sandbox.fuel == 7
    assert parsed.given == {"wasm_sandbox", "debug"}
    with pytest.raises(InvalidArgumentError, match="invalid WasmMaxInstances in t"):
        parse_toml("WasmMaxInstances = -1\n", "t")
    with pytest.raises(InvalidArgumentError, match=r"unknown keys in t: \['WasmTurbo'\]"):
        parse_toml("WasmTurbo = 1\n", "t")
