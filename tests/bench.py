"""``make bench``: runwasm figures on this machine, in one run, printed as compact tables.

1. ``ctr run --rm`` wall time through a private containerd 1.6: Wasm hello via runwasm vs
   busybox ``/bin/true`` via the runc shim (``io.containerd.runc.v2``), median of n runs after
   warm-ups, interleaved so both see the same machine state; printed with their ratio.
2. Tasks/s through ONE runwasm shim with the standalone harness library: hello run to
   completion sequentially, then with N in flight. All containers carry the same
   ``io.containerd.runwasm.v1.group`` annotation, so every ``shim start`` reuses one server;
   an anchor container (created, never started) keeps that server alive between tasks.
   Each task is what containerd does per container: ``shim start``, Create, Wait, Start, Delete,
   Shutdown, ``shim delete``.
3. ``tests.bench_wasm``, ``tests.bench_oci`` and ``tests.bench_linux`` ``main()`` when they exist.

No assertions on timing. Options: ``-n`` (ctr runs, default 15), ``--warmup`` (2),
``--tasks`` (harness tasks per mode, default 40), ``--inflight`` (8), ``--skip-others``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "fixtures" / "build" / "wasm" / "hello.wasm"
GROUP_ANNOTATION = "io.containerd.runwasm.v1.group"
OTHER_BENCHES = ("tests.bench_wasm", "tests.bench_oci", "tests.bench_linux")


@dataclass(frozen=True, slots=True)
class Timing:
    label: str
    samples: list[float]
    failures: int

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")


def _table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*headers), fmt.format(*("-" * w for w in widths)),
                      *(fmt.format(*r) for r in rows)])


# --- 1. ctr run --rm: runwasm vs runc ---------------------------------------------------------

def bench_ctr(n: int, warmup: int) -> str:
    from fixtures.images import busybox_image
    from tests.integration.daemon import RUNC_RUNTIME, RUNWASM_RUNTIME, Containerd, containerd_binary
    from tests.integration.images import pack_wasm_image

    if containerd_binary() is None:
        return "ctr run: skipped (containerd binary not found on PATH)"
    with Containerd(namespace=f"rwbench{os.getpid()}") as d, tempfile.TemporaryDirectory() as tmp:
        wasm_ref = pack_wasm_image(HELLO, Path(tmp) / "hello.tar", "runwasm.bench/hello:1")
        d.ctr("images", "import", "--all-platforms", str(Path(tmp) / "hello.tar"))
        bb_ref = "runwasm.bench/busybox:1"
        busybox_image(Path(tmp) / "busybox.tar", bb_ref)
        d.ctr("images", "import", str(Path(tmp) / "busybox.tar"))
        cases: list[tuple[str, str, str, tuple[str, ...], str]] = [
            ("runwasm  hello.wasm", wasm_ref, RUNWASM_RUNTIME, (), "hello from wasm\n"),
            ("runc     busybox /bin/true", bb_ref, RUNC_RUNTIME, ("/bin/true",), ""),
        ]
        samples: dict[str, list[float]] = {c[0]: [] for c in cases}
        failures: dict[str, int] = {c[0]: 0 for c in cases}
        errors: list[str] = []
        for i in range(warmup + n):
            for label, ref, runtime, args, expect in cases:
                cid = f"b{i}-{runtime.split('.')[-2]}"
                argv = d.ctr_argv(*d.run_args(ref, cid, *args, runtime=runtime))
                t0 = time.perf_counter()
                proc = subprocess.run(argv, capture_output=True, text=True, env=d.env(), timeout=60)
                dt = time.perf_counter() - t0
                if proc.returncode != 0 or proc.stdout != expect:
                    failures[label] += 1
                    errors.append(f"{label}: exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[:200]}")
                elif i >= warmup:
                    samples[label].append(dt)
        timings = [Timing(label, samples[label], failures[label]) for label, *_ in cases]
    rows = [(t.label, f"{t.median * 1000:.1f}", f"{min(t.samples, default=float('nan')) * 1000:.1f}",
             f"{len(t.samples)}", f"{t.failures}") for t in timings]
    ratio = timings[0].median / timings[1].median
    out = [f"ctr run --rm through a private containerd 1.6 (n={n}, {warmup} warm-ups, interleaved)",
           _table(("case", "median ms", "min ms", "n", "fail"), rows),
           f"ratio runwasm/runc (median): {ratio:.2f}x"]
    out += [f"  error: {e}" for e in errors[:5]]
    return "\n".join(out)


# --- 2. tasks/s through one shim (harness library) --------------------------------------------

async def _harness_rates(tasks: int, inflight: int) -> list[tuple[str, int, int, float]]:
    from google.protobuf import empty_pb2
    from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
    from runwasm.shim.bundle import make_wasm_bundle
    from runwasm.shim.harness import Harness, connected, run_task

    group = {GROUP_ANNOTATION: f"bench-{os.getpid()}"}
    devnull = os.open(os.devnull, os.O_WRONLY)
    results: list[tuple[str, int, int, float]] = []
    try:
        async with Harness() as h:
            anchor = "anchor"
            anchor_bundle = h.new_bundle(anchor)
            make_wasm_bundle(anchor_bundle, HELLO, [], [], annotations=group)
            address, version = await h.shim_start(anchor, anchor_bundle)
            try:
                async with connected(address, version) as t:
                    await t.call("Create", pb.CreateTaskRequest(id=anchor, bundle=str(anchor_bundle)),
                                 pb.CreateTaskResponse)
                    counter = 0

                    async def one(prefix: str) -> bool:
                        nonlocal counter
                        counter += 1
                        cid = f"{prefix}{counter}"
                        bundle = h.new_bundle(cid)
                        make_wasm_bundle(bundle, HELLO, [], [], annotations=group)
                        res = await run_task(h, cid, bundle, stdout=devnull, stderr=devnull)
                        return bool(res.exit_status == 0)

                    for mode, width in (("sequential", 1), (f"{inflight} in flight", inflight)):
                        await one("warm")
                        sem = asyncio.Semaphore(width)

                        async def limited(sem: asyncio.Semaphore = sem) -> bool:
                            async with sem:
                                return await one("t")

                        t0 = time.perf_counter()
                        done = await asyncio.gather(*(limited() for _ in range(tasks)), return_exceptions=True)
                        dt = time.perf_counter() - t0
                        ok = sum(1 for r in done if r is True)
                        for err in [r for r in done if isinstance(r, BaseException)][:1]:
                            print(f"  {mode}: first failure: {err!r}", flush=True)
                        results.append((mode, tasks, tasks - ok, dt))
                    # the anchor's server answering proves all tasks went through this one shim
                    await t.call("State", pb.StateRequest(id=anchor), pb.StateResponse)
                    await t.call("Delete", pb.DeleteRequest(id=anchor), pb.DeleteResponse)
                    await t.call("Shutdown", pb.ShutdownRequest(id=anchor), empty_pb2.Empty, timeout=3)
            finally:
                await h.shim_delete(anchor, anchor_bundle)
    finally:
        os.close(devnull)
    return results


def bench_harness(tasks: int, inflight: int) -> str:
    results = asyncio.run(_harness_rates(tasks, inflight))
    rows = [(mode, f"{n / dt:.1f}", f"{dt * 1000 / n:.1f}", f"{n}", f"{fail}")
            for mode, n, fail, dt in results]
    return "\n".join(["hello.wasm through ONE runwasm shim via the harness (shim start + "
                      "Create/Start/Wait/Delete/Shutdown + shim delete per task)",
                      _table(("mode", "tasks/s", "ms/task", "tasks", "fail"), rows)])


# --- 3. the other areas' benchmarks -------------------------------------------------------------

def run_others(names: tuple[str, ...]) -> None:
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                print(f"(not present: {name})")
                continue
            print(f"failed to import {name}: {err!r}")
            continue
        except Exception as err:  # a broken neighbour must not stop the rest
            print(f"failed to import {name}: {err!r}")
            continue
        entry: Callable[[], object] | None = getattr(module, "main", None)
        if entry is None:
            print(f"{name} has no main()")
            continue
        saved = sys.argv
        sys.argv = [name]  # their main() may read sys.argv; do not hand them our options
        try:
            entry()
        except SystemExit as exc:
            if exc.code not in (None, 0):
                print(f"{name}.main() exited with {exc.code!r}")
        except Exception:
            print(f"{name}.main() failed:\n{traceback.format_exc()}")
        finally:
            sys.argv = saved
            sys.stdout.flush()


def _section(title: str, fn: Callable[[], str]) -> None:
    print(f"\n=== {title} ===", flush=True)
    try:
        print(fn(), flush=True)
    except Exception:
        print(f"failed:\n{traceback.format_exc()}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=15, help="timed ctr runs per case (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up runs per case (default 2)")
    parser.add_argument("--tasks", type=int, default=40, help="harness tasks per mode (default 40)")
    parser.add_argument("--inflight", type=int, default=8, help="harness tasks in flight (default 8)")
    parser.add_argument("--skip-others", action="store_true", help="do not run bench_wasm/oci/linux")
    args = parser.parse_args(argv)
    print(f"runwasm bench on {os.uname().nodename} ({os.cpu_count()} cpus, Python {sys.version.split()[0]})")
    _section("containerd: ctr run --rm", lambda: bench_ctr(args.n, args.warmup))
    _section("harness: tasks/s through one shim", lambda: bench_harness(args.tasks, args.inflight))
    if not args.skip_others:
        run_others(OTHER_BENCHES)


if __name__ == "__main__":
    main()
