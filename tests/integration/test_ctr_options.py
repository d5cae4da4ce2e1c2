"""Runtime options from ``ctr run --runtime-config-path`` reach the shim (containerd 1.6: on start's
stdin and in CreateTaskRequest.options)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.daemon import Containerd

pytestmark = pytest.mark.integration


def test_config_file_selects_the_compile_cache(containerd: Containerd, wasm_images: dict[str, str],
                                               tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cfg = tmp_path / "runwasm.toml"
    cfg.write_text(f'WasmCacheDir = "{cache}"\n')
    res = containerd.run(wasm_images["hello"], "opt1", extra=("--runtime-config-path", str(cfg)))
    assert (res.returncode, res.stdout) == (0, "hello from wasm\n"), res.output
    assert any(cache.rglob("*")), "the compile cache named in the runtime options stayed empty"


def test_bad_config_file_is_reported_to_the_user(containerd: Containerd, wasm_images: dict[str, str],
                                                 tmp_path: Path) -> None:
    cfg = tmp_path / "runwasm.toml"
    cfg.write_text("Executor = 'native'\n")
    res = containerd.run(wasm_images["hello"], "opt2", extra=("--runtime-config-path", str(cfg)))
    assert res.returncode != 0
    assert "invalid Executor" in res.output
    assert "expected one of ['auto', 'wasm', 'linux']" in res.output


def test_sandbox_fuel_and_annotations_through_ctr(containerd: Containerd, wasm_images: dict[str, str],
                                                  tmp_path: Path) -> None:
    """WasmFuel from the runtime options stops a spinning guest (trap, 134); an annotation may set
    it only because WasmAnnotations lists it, and an unlisted one is refused at Create."""
    cfg = tmp_path / "runwasm.toml"
    cfg.write_text('WasmFuel = 2000000\nWasmAnnotations = ["WasmUnknownImports"]\n')
    res = containerd.run(wasm_images["spin"], "sb-fuel", extra=("--runtime-config-path", str(cfg)), timeout=60)
    assert res.returncode == 134, res.output
    res = containerd.run(wasm_images["hello"], "sb-ann-ok", extra=(
        "--runtime-config-path", str(cfg), "--annotation", "io.containerd.runwasm.v1.WasmUnknownImports=trap"))
    assert (res.returncode, res.stdout) == (0, "hello from wasm\n"), res.output
    res = containerd.run(wasm_images["hello"], "sb-ann-no", extra=(
        "--runtime-config-path", str(cfg), "--annotation", "io.containerd.runwasm.v1.WasmFuel=1"))
    assert res.returncode != 0
    assert "'io.containerd.runwasm.v1.WasmFuel' is not allowed" in res.output


def test_sandbox_refusal_at_start_names_the_key(containerd: Containerd, wasm_images: dict[str, str],
                                                tmp_path: Path) -> None:
    cfg = tmp_path / "runwasm.toml"
    cfg.write_text("WasmNetwork = 1\n")
    res = containerd.run(wasm_images["hello"], "sb-net", extra=("--runtime-config-path", str(cfg)))
    assert res.returncode != 0
    assert "invalid WasmNetwork" in res.output
    cfg.write_text("WasmNetwork = true\n")  # valid, but a preview 1 module has no sockets: refused at Create
    res = containerd.run(wasm_images["hello"], "sb-net-p1", extra=("--runtime-config-path", str(cfg)))
    assert res.returncode != 0
    assert "WASI preview 1 core module, and preview 1 has no socket calls" in res.output
