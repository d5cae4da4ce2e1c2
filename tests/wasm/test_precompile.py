"""runwasm.wasm.precompile: the child process the shim server compiles an image's layer in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

from runwasm.wasm.engine import make_engine
from runwasm.wasm.errors import InvalidModuleError
from runwasm.wasm.precompile import EXIT_INVALID, compile_to
from runwasm.wasm.sandbox import Sandbox

HELLO_WAT = (Path(__file__).resolve().parents[2] / "fixtures" / "wasm" / "hello.wat").read_text()


def _run(req: dict[str, object]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "runwasm.wasm.precompile"], input=json.dumps(req).encode(),
                          capture_output=True, check=False, timeout=120)


def test_child_writes_an_artifact_the_engine_of_the_same_sandbox_loads(tmp_path: Path) -> None:
    module = tmp_path / "m.wasm"
    module.write_bytes(bytes(wasmtime.wat2wasm(HELLO_WAT)))
    sandbox = Sandbox(fuel=1000)
    out = tmp_path / "m.cwasm"
    res = _run({"module": str(module), "kind": "module", "sandbox": sandbox.to_json(), "out": str(out)})
    assert res.returncode == 0, res.stderr
    wasmtime.Module.deserialize_file(make_engine(sandbox), str(out))
    # compiled for another engine configuration: wasmtime refuses it
    with pytest.raises(wasmtime.WasmtimeError):
        wasmtime.Module.deserialize_file(make_engine(), str(out))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_invalid_module_exits_2_with_wasmtimes_message(tmp_path: Path) -> None:
    module = tmp_path / "bad.wasm"
    module.write_bytes(b"\0asm\x01\0\0\0\xff\xff")
    out = tmp_path / "bad.cwasm"
    res = _run({"module": str(module), "kind": "module", "sandbox": None, "out": str(out)})
    assert res.returncode == EXIT_INVALID
    assert f"failed to compile wasm module {str(module)!r}" in res.stderr.decode()
    assert not out.exists()
    with pytest.raises(InvalidModuleError, match="unknown kind"):
        compile_to(str(module), "wat", None, str(out))


def test_bad_request_exits_1(tmp_path: Path) -> None:
    res = _run({"kind": "module"})
    assert res.returncode == 1
    assert "KeyError" in res.stderr.decode()
