"""Benchmark: the node-wide compile cache on a module that takes seconds to compile.

Run: ``.venv/bin/python -m tests.bench_cache [FUNCS]`` (part of ``make bench``). A synthetic
module with FUNCS (default 8000) chained functions is generated; then, through the real
harness (``runwasm run MODULE --runtime-config`` with ``WasmCacheDir`` set):

- first run: empty cache (compile + store);
- second run: same cache (MAC check + deserialize);
- 8 concurrent first runs: a fresh empty cache, 8 ``runwasm run`` started together: wall time
  until the last one is done;

and at the cache layer (8 processes calling ``CompileCache.load`` at once on a fresh cache):
how many of them compiled. No timing is asserted anywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
RACER = """
import sys, time
from runwasm.wasm.cache import CompileCache
from runwasm.wasm.engine import make_engine
data = open(sys.argv[2], 'rb').read()
sys.stdin.read()
t0 = time.monotonic()
src = CompileCache(make_engine(), sys.argv[1]).load(data).source
print(src, time.monotonic() - t0)
"""


def make_module(funcs: int, out: Path) -> None:
    import wasmtime

    body = "".join(
        f"(func $f{i} (param i32) (result i32) (local i32) local.get 0 i32.const {i} i32.add local.tee 1 "
        f"local.get 1 i32.mul i32.const {i % 31 + 1} i32.rotl local.get 0 i32.xor"
        f"{f' call $f{i - 1}' if i else ''})" for i in range(funcs))
    wat = ('(module (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))'
           '(memory (export "memory") 1) (data (i32.const 16) "big module ran\\n")' + body +
           '(func (export "_start") (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) '
           '(i32.const 15)) (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))')
    out.write_bytes(bytes(wasmtime.wat2wasm(wat)))


def _config(tmp: Path, name: str) -> Path:
    cfg = tmp / f"{name}.toml"
    cfg.write_text(f'WasmCacheDir = "{tmp / name}"\n')
    return cfg


def _run_cmd(module: Path, cfg: Path) -> list[str]:
    return [str(VENV_BIN / "runwasm"), "run", "--runtime-config", str(cfg), str(module)]


def _timed_run(module: Path, cfg: Path) -> float:
    t0 = time.monotonic()
    res = subprocess.run(_run_cmd(module, cfg), capture_output=True, text=True)
    took = time.monotonic() - t0
    if res.returncode != 0 or res.stdout != "big module ran\n":
        raise RuntimeError(f"runwasm run failed ({res.returncode}): {res.stdout!r} {res.stderr[-2000:]}")
    return took


def _race(cache: Path, module: Path, n: int) -> list[tuple[str, float]]:
    """``n`` processes load ``module`` through ``CompileCache`` at once: [(source, seconds in load)]."""
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(cache), str(module)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    for r in racers:
        assert r.stdin is not None
        r.stdin.close()  # all are started (and have read the module) before any loads it
    out = []
    for r in racers:
        assert r.stdout is not None
        src, took = r.stdout.read().split()
        r.stdout.close()
        r.wait()
        out.append((src, float(took)))
    return out


def main() -> None:
    funcs = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    with tempfile.TemporaryDirectory(prefix="rwbc-") as d:
        tmp = Path(d)
        module = tmp / "big.wasm"
        make_module(funcs, module)
        first_cfg = _config(tmp, "c1")
        first = _timed_run(module, first_cfg)
        second = _timed_run(module, first_cfg)
        herd_cfg = _config(tmp, "c8")
        t0 = time.monotonic()
        procs = [subprocess.Popen(_run_cmd(module, herd_cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(8)]
        outs = [p.communicate() for p in procs]
        herd = time.monotonic() - t0
        bad = [(p.returncode, o, e[-500:]) for p, (o, e) in zip(procs, outs, strict=True)
               if p.returncode != 0 or o != "big module ran\n"]
        if bad:
            raise RuntimeError(f"concurrent runs failed: {bad}")
        layer_first = _race(tmp / "layer", module, 1)
        layer_second = _race(tmp / "layer", module, 1)
        race = _race(tmp / "race", module, 8)
        sources = [src for src, _ in race]
        artifacts = sorted((tmp / "c8").rglob("*.cwasm"))
        print(f"module: {module.stat().st_size} bytes ({funcs} functions), artifact "
              f"{artifacts[0].stat().st_size if artifacts else 0} bytes")
        print("| case | wall |")
        print("| --- | --- |")
        print(f"| runwasm run: first run, empty cache | {first:.2f} s |")
        print(f"| runwasm run: second run, same cache | {second:.2f} s |")
        print(f"| runwasm run: 8 concurrent first runs, empty cache | {herd:.2f} s for all 8 |")
        print(f"| cache layer: first load, empty cache | {layer_first[0][1]:.2f} s ({layer_first[0][0]}) |")
        print(f"| cache layer: second load | {layer_second[0][1]:.3f} s ({layer_second[0][0]}) |")
        print(f"| cache layer: 8 simultaneous first loads | slowest {max(t for _, t in race):.2f} s: "
              f"{sources.count('compiled')} compiled, {sources.count('hit')} hit, "
              f"{sources.count('uncached')} uncached |")
        print(f"{len(artifacts)} artifact(s) in the 8 concurrent runs' cache; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
