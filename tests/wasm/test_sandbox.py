"""The configurable sandbox: parsing (keys named in errors) and its effect on real guests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runwasm.wasm.errors import SandboxError
from runwasm.wasm.sandbox import Preopen, Sandbox, from_toml, with_annotations
from tests.wasm import harness

WRITEFILE = """(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "out.txt")
  (func (export "_start") (local $e i32)
    ;; dirfd 4 (the first extra preopen after "/"), O_CREAT, rights fd_write
    (local.set $e (call $open (i32.const 4) (i32.const 0) (i32.const 16) (i32.const 7) (i32.const 1)
                              (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 8)))
    (call $exit (select (i32.const 0) (i32.add (i32.const 100) (local.get $e)) (i32.eqz (local.get $e))))))
"""
UNKNOWN = """(module
  (import "env" "host_only" (func $h (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (func (export "_start") (call $exit (i32.const 3)))
  (func (export "call_it") (call $exit (i32.add (i32.const 40) (call $h)))))
"""
GROW = """(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory 1)
  ;; exit 1 if growing by 64 pages (4 MiB) fails, else 0
  (func (export "_start") (call $exit (i32.eq (memory.grow (i32.const 64)) (i32.const -1)))))
"""
GC = "(module (type (struct (field i32))) (func (export \"_start\")))"


def _payload(rootfs: Path, cache_dir: Path, arg0: str, sandbox: Sandbox, *args: str) -> dict[str, Any]:
    return {"rootfs": str(rootfs), "args": [arg0, *args], "cache_dir": str(cache_dir), "sandbox": sandbox.to_json()}


# --- parsing ----------------------------------------------------------------------------------

def test_from_toml_all_keys() -> None:
    sb = from_toml({"WasmPreopens": ["/srv:/data", "/tmp/x:/scratch:rw"], "WasmFeatures": {"gc": False},
                    "WasmMaxMemory": 1 << 20, "WasmMaxTableElements": 100, "WasmMaxInstances": 2,
                    "WasmFuel": 10, "WasmUnknownImports": "trap", "WasmAnnotations": ["WasmFuel"],
                    "WasmNetwork": False}, "t")
    assert sb.preopens == (Preopen("/srv", "/data", True), Preopen("/tmp/x", "/scratch", False))
    assert (sb.features, sb.max_memory, sb.fuel, sb.unknown_imports) == ((("gc", False),), 1 << 20, 10, "trap")
    assert Sandbox.from_json(sb.to_json()) == Sandbox(**{**{f: getattr(sb, f) for f in Sandbox.__slots__},
                                                         "annotations": ()})


@pytest.mark.parametrize(("doc", "match"), [
    ({"WasmFeatures": {"warp-drive": True}}, "WasmFeatures.*unknown feature 'warp-drive'"),
    ({"WasmFeatures": {"reference-types": False}}, "WasmFeatures.*reference-types = false is impossible"),
    ({"WasmFeatures": {"simd": False}}, "WasmFeatures.*relaxed-simd = false too"),
    ({"WasmNetwork": "yes"}, "WasmNetwork.*expected bool"),
    ({"WasmFuel": 0}, "WasmFuel.*positive integer"),
    ({"WasmMaxMemory": "1G"}, "WasmMaxMemory.*expected int"),
    ({"WasmUnknownImports": "ignore"}, "WasmUnknownImports.*'ignore'"),
    ({"WasmPreopens": ["rel:/data"]}, "WasmPreopens.*absolute"),
    ({"WasmPreopens": ["/a:/b:rx"]}, "WasmPreopens.*HOST:GUEST"),
    ({"WasmAnnotations": ["Executor"]}, "WasmAnnotations.*'Executor' is not a sandbox key"),
])
def test_refusals_name_the_key(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(SandboxError, match=match):
        from_toml(doc, "t")


def test_simd_off_with_relaxed_off_is_fine() -> None:
    assert from_toml({"WasmFeatures": {"simd": False, "relaxed-simd": False}}, "t").features == (
        ("relaxed-simd", False), ("simd", False))


def test_annotations_only_where_allowed() -> None:
    base = from_toml({"WasmAnnotations": ["WasmFuel", "WasmFeatures"]}, "t")
    sb = with_annotations(base, {"io.containerd.runwasm.v1.WasmFuel": "500",
                                 "io.containerd.runwasm.v1.WasmFeatures": "gc=false,tail-call=true",
                                 "io.containerd.runwasm.v1.executor": "wasm", "other": "x"})
    assert (sb.fuel, sb.features) == (500, (("gc", False), ("tail-call", True)))
    with pytest.raises(SandboxError, match="'io.containerd.runwasm.v1.WasmUnknownImports' is not allowed"):
        with_annotations(base, {"io.containerd.runwasm.v1.WasmUnknownImports": "trap"})
    with pytest.raises(SandboxError, match="unknown sandbox annotation 'io.containerd.runwasm.v1.WasmTurbo'"):
        with_annotations(base, {"io.containerd.runwasm.v1.WasmTurbo": "1"})
    with pytest.raises(SandboxError, match="WasmFuel in annotation.*decimal integer"):
        with_annotations(base, {"io.containerd.runwasm.v1.WasmFuel": "lots"})
    assert with_annotations(Sandbox(), {}) == Sandbox()


# --- effect on real guests ----------------------------------------------------------------------

def test_fuel_stops_a_spinning_guest(rootfs: Path, cache_dir: Path) -> None:
    rc, out, err, log = harness.run(_payload(rootfs, cache_dir, "/spin.wasm", Sandbox(fuel=1_000_000)))
    assert (rc, out) == (134, "spinning\n")
    assert "all fuel consumed" in err  # wasmtime-min's report (-W fuel=N)
    rc, out, err, log = harness.run(_payload(rootfs, cache_dir, "/spin.wasm", Sandbox(fuel=1_000_000,
                                                                                       executor="inprocess")))
    assert (rc, out) == (134, "spinning\n")
    assert "fuel" in log


def test_preopen_read_only_and_read_write(rootfs: Path, cache_dir: Path, tmp_path: Path) -> None:
    (rootfs / "writefile.wat").write_text(WRITEFILE)
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    rc, _, _, _ = harness.run(_payload(rootfs, cache_dir, "/writefile.wat", Sandbox(preopens=(Preopen(str(ro), "/d"),))))
    assert rc in (100 + 63, 100 + 76, 100 + 2)  # EPERM, ENOTCAPABLE or EACCES: not writable
    assert not (ro / "out.txt").exists()
    rc, _, _, _ = harness.run(_payload(rootfs, cache_dir, "/writefile.wat",
                                       Sandbox(preopens=(Preopen(str(rw), "/d", readonly=False),))))
    assert rc == 0
    assert (rw / "out.txt").exists()


def test_unknown_imports(rootfs: Path, cache_dir: Path) -> None:
    (rootfs / "unknown.wat").write_text(UNKNOWN)
    msg = harness.spawn(_payload(rootfs, cache_dir, "/unknown.wat", Sandbox()))
    first = msg.handshake()
    msg.finish()
    assert first["type"] == "error"
    assert "env::host_only" in first["message"]
    assert harness.run(_payload(rootfs, cache_dir, "/unknown.wat", Sandbox(unknown_imports="trap")))[0] == 3
    assert harness.run(_payload(rootfs, cache_dir, "/unknown.wat#call_it", Sandbox(unknown_imports="trap")))[0] == 134
    assert harness.run(_payload(rootfs, cache_dir, "/unknown.wat#call_it", Sandbox(unknown_imports="default")))[0] == 40


def test_max_memory_limits_growth(rootfs: Path, cache_dir: Path) -> None:
    (rootfs / "grow.wat").write_text(GROW)
    assert harness.run(_payload(rootfs, cache_dir, "/grow.wat", Sandbox()))[0] == 0
    assert harness.run(_payload(rootfs, cache_dir, "/grow.wat", Sandbox(max_memory=1 << 20)))[0] == 1


def test_max_memory_limits_growth_under_wasmtime_min(rootfs: Path, cache_dir: Path) -> None:
    """An exported memory: the task runs under wasmtime-min, with -W max-memory-size."""
    (rootfs / "grow.wat").write_text(GROW.replace("(memory 1)", '(memory (export "memory") 1)'))
    rc, _, _, log = harness.run(_payload(rootfs, cache_dir, "/grow.wat", Sandbox()))
    assert rc == 0
    assert "runs in process" not in log
    assert harness.run(_payload(rootfs, cache_dir, "/grow.wat", Sandbox(max_memory=1 << 20)))[0] == 1


def test_features_switch_proposals_and_key_the_cache(rootfs: Path, cache_dir: Path) -> None:
    (rootfs / "gc.wat").write_text(GC)
    assert harness.run(_payload(rootfs, cache_dir, "/gc.wat", Sandbox()))[0] == 0
    child = harness.spawn(_payload(rootfs, cache_dir, "/gc.wat", Sandbox(features=(("gc", False),))))
    first = child.handshake()
    child.finish()
    assert first["type"] == "error"
    assert first["kind"] == "InvalidModuleError"
    assert len(list(cache_dir.glob("wasmtime-[0-9]*/*.cwasm"))) == 1  # the gc-less engine stored nothing under the default key


def test_engine_fingerprint_follows_code_changing_settings() -> None:
    from runwasm.wasm.engine import ENGINE_FINGERPRINT, engine_fingerprint

    assert engine_fingerprint(Sandbox()) == engine_fingerprint(Sandbox(max_memory=1, unknown_imports="trap")) \
        == ENGINE_FINGERPRINT
    assert len({engine_fingerprint(Sandbox()), engine_fingerprint(Sandbox(fuel=5)),
                engine_fingerprint(Sandbox(features=(("gc", False),)))}) == 3


def test_wasm_network_is_accepted_from_options_and_allowed_annotations() -> None:
    assert from_toml({"WasmNetwork": True}, "t").network is True
    base = from_toml({"WasmAnnotations": ["WasmNetwork"]}, "t")
    assert with_annotations(base, {"io.containerd.runwasm.v1.WasmNetwork": "true"}).network is True
    with pytest.raises(SandboxError, match="'io.containerd.runwasm.v1.WasmNetwork' is not allowed"):
        with_annotations(Sandbox(), {"io.containerd.runwasm.v1.WasmNetwork": "true"})
