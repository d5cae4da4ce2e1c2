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
3. Memory, as runwasi publishes it: peak RSS (``VmHWM``) of the runwasm shim server and of its
   zygote after one hello run through the harness (read before Shutdown), and the RSS of a
   running Wasm workload (``spin.wasm``, killed after reading); then, under a private
   containerd, the ``containerd-shim-runc-v2`` serving a running busybox ``sleep`` next to a
   runwasm shim serving ``spin.wasm``. Printed with the ratio runwasm/runc.
4. ``tests.bench_wasm``, ``tests.bench_cache``, ``tests.bench_http``, ``tests.bench_image_cache``, ``tests.bench_oci``,
   ``tests.bench_snapshotter``, ``tests.bench_linux``, ``tests.bench_ttrpc`` and ``tests.bench_otel``
   ``main()`` when they exist.

No assertions on figures. Options: ``-n`` (ctr runs, default 15), ``--warmup`` (2),
``--tasks`` (harness tasks per mode, default 40), ``--inflight`` (8), ``--skip-others``,
``--only SECTION`` (``ctr``, ``harness`` or ``memory``; repeatable).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import shutil
import signal
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
OTHER_BENCHES = ("tests.bench_wasm", "tests.bench_cache", "tests.bench_http", "tests.bench_image_cache", "tests.bench_oci",
                 "tests.bench_snapshotter", "tests.bench_linux", "tests.bench_ttrpc", "tests.bench_cost",
                 "tests.bench_otel")
SECTIONS = ("ctr", "harness", "memory")


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
            ("runwasm  busybox /bin/true", bb_ref, RUNWASM_RUNTIME, ("/bin/true",), ""),
        ]
        samples: dict[str, list[float]] = {c[0]: [] for c in cases}
        failures: dict[str, int] = {c[0]: 0 for c in cases}
        errors: list[str] = []
        rounds = [(i, cases) for i in range(warmup + n)]
        for i, batch in rounds:
            for label, ref, runtime, args, expect in batch:
                cid = f"b{i}-{runtime.split('.')[-2]}-{'bb' if ref == bb_ref else 'w'}"
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
    native = timings[2].median / timings[1].median
    out = [f"ctr run --rm through a private containerd 1.6 (n={n}, {warmup} warm-ups, interleaved)",
           _table(("case", "median ms", "min ms", "n", "fail"), rows),
           f"ratio runwasm hello.wasm / runc busybox (median): {ratio:.2f}x",
           f"ratio runwasm busybox / runc busybox, same image (median): {native:.2f}x"]
    out += [f"  error: {e}" for e in errors[:5]]
    return "\n".join(out)


# --- 2. tasks/s through one shim (harness library) --------------------------------------------

def bench_harness(tasks: int, inflight: int) -> str:
    """``runwasm stress --full`` (shim start + Create/Start/Wait/Delete + shim delete per task),
    sequential and ``inflight`` at a time, through one shim."""
    from runwasm.shim.harness.stress import run_stress

    rows = []
    for mode, width in (("sequential", 1), (f"{inflight} in flight", inflight)):
        r = asyncio.run(run_stress(HELLO, tasks, width, full=True))
        rows.append((mode, f"{r.rate:.1f}", f"{r.seconds * 1000 / tasks:.1f}", f"{tasks}", f"{r.failures}"))
        for err in r.errors[:1]:
            print(f"  {mode}: first failure: {err}", flush=True)
    return "\n".join(["hello.wasm through ONE runwasm shim via the harness (shim start + "
                      "Create/Start/Wait/Delete + shim delete per task; `runwasm stress --full`)",
                      _table(("mode", "tasks/s", "ms/task", "tasks", "fail"), rows)])


# --- 3. memory: peak RSS of the shim processes (as runwasi publishes) ---------------------------

MIB = 1024.0


@dataclass(frozen=True, slots=True)
class Mem:
    """Memory figures of one process in KiB (``/proc/<pid>/status`` and ``smaps_rollup``)."""

    label: str
    pid: int
    hwm: int
    rss: int
    pss: int

    def row(self) -> tuple[str, ...]:
        return (self.label, str(self.pid), f"{self.hwm / MIB:.1f}", f"{self.rss / MIB:.1f}", f"{self.pss / MIB:.1f}")


def read_mem(label: str, pid: int) -> Mem:
    """VmHWM/VmRSS from ``/proc/<pid>/status``, Pss from ``smaps_rollup`` (0 if unreadable)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0])
    pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return Mem(label, pid, fields.get("VmHWM", 0), fields.get("VmRSS", 0), pss)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def runwasm_shim_pids(namespace: str, container_id: str) -> tuple[int, int | None]:
    """(server pid, zygote pid) of the runwasm shim started for ``namespace``/``container_id``.

    Both run ``containerd-shim-runwasm-v1 -namespace NS -id ID _runwasm_serve``; the zygote is
    the server's child.
    """
    matches = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        argv = _cmdline(pid)
        if ("_runwasm_serve" in argv and any(a.endswith("containerd-shim-runwasm-v1") for a in argv)
                and _flag(argv, "-namespace") == namespace and _flag(argv, "-id") == container_id):
            matches.append(pid)
    servers = [p for p in matches if _ppid(p) not in matches]
    if len(servers) != 1:
        raise RuntimeError(f"expected one runwasm shim server for {namespace}/{container_id}, found {matches}")
    zygotes = [p for p in matches if _ppid(p) == servers[0]]
    return servers[0], (zygotes[0] if zygotes else None)


async def _harness_memory() -> list[Mem]:
    from google.protobuf import empty_pb2

    from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
    from runwasm.shim.harness.bundle import make_wasm_bundle
    from runwasm.shim.harness.driver import NAMESPACE, Harness, connected

    spin_module = HELLO.parent / "spin.wasm"
    group = {GROUP_ANNOTATION: f"mem-{os.getpid()}"}
    out: list[Mem] = []
    async with Harness() as h:
        hello, spin = f"mem-hello-{os.getpid()}", f"mem-spin-{os.getpid()}"
        hb, sb = h.new_bundle(hello), h.new_bundle(spin)
        make_wasm_bundle(hb, HELLO, [], [], annotations=group)
        make_wasm_bundle(sb, spin_module, [], [], annotations=group)
        address, version = await h.shim_start(hello, hb)
        started = [(hello, hb)]
        shim_pids: list[int] = []
        try:
            async with connected(address, version) as t:
                await t.call("Create", pb.CreateTaskRequest(id=hello, bundle=str(hb)), pb.CreateTaskResponse)
                waiter = asyncio.create_task(t.call("Wait", pb.WaitRequest(id=hello), pb.WaitResponse))
                await t.call("Start", pb.StartRequest(id=hello), pb.StartResponse)
                status = (await waiter).exit_status
                await t.call("Delete", pb.DeleteRequest(id=hello), pb.DeleteResponse)
                if status != 0:
                    raise RuntimeError(f"hello.wasm exited with {status}")
                server, zygote = runwasm_shim_pids(NAMESPACE, hello)
                shim_pids += [server] if zygote is None else [server, zygote]
                out.append(read_mem("runwasm shim server (after 1 hello run)", server))
                if zygote is not None:
                    out.append(read_mem("runwasm zygote", zygote))
                # the spinning module in the same shim (same group): the workload's own figures
                spin_address, _ = await h.shim_start(spin, sb)
                started.append((spin, sb))
                if spin_address != address:
                    raise RuntimeError(f"spin went to another shim: {spin_address} != {address}")
                created = await t.call("Create", pb.CreateTaskRequest(id=spin, bundle=str(sb)), pb.CreateTaskResponse)
                waiter = asyncio.create_task(t.call("Wait", pb.WaitRequest(id=spin), pb.WaitResponse))
                await t.call("Start", pb.StartRequest(id=spin), pb.StartResponse)
                await asyncio.sleep(0.5)
                out.append(read_mem("Wasm workload (spin.wasm, running)", created.pid))
                await t.call("Kill", pb.KillRequest(id=spin, signal=9), empty_pb2.Empty)
                await waiter
                await t.call("Delete", pb.DeleteRequest(id=spin), pb.DeleteResponse)
                # one Shutdown once nothing is hosted: the server exits and closes the connection
                await t.call("Shutdown", pb.ShutdownRequest(id=spin), empty_pb2.Empty, timeout=3)
        finally:
            for cid, bundle in reversed(started):
                await h.shim_delete(cid, bundle)
            await asyncio.sleep(0.2)
            for pid in shim_pids:  # after a failure the server may still run: it is ours, end it
                if Path(f"/proc/{pid}").exists() and "_runwasm_serve" in _cmdline(pid):
                    print(f"  memory: ending leftover shim process {pid}", flush=True)
                    os.kill(pid, signal.SIGKILL)
    return out


def _containerd_memory() -> tuple[list[Mem], str | None]:
    """runc shim serving a running busybox ``sleep``, and a runwasm shim serving spin.wasm, both
    under a private containerd 1.6 (``ctr run -d``)."""
    from fixtures.images import busybox_image
    from tests.integration.daemon import RUNC_RUNTIME, RUNWASM_RUNTIME, Containerd, containerd_binary
    from tests.integration.images import pack_wasm_image

    if containerd_binary() is None:
        return [], "containerd binary not found on PATH"
    out: list[Mem] = []
    with Containerd(namespace=f"rwmem{os.getpid()}") as d, tempfile.TemporaryDirectory() as tmp:
        bb_ref = "runwasm.bench/busybox:1"
        busybox_image(Path(tmp) / "busybox.tar", bb_ref)
        d.ctr("images", "import", str(Path(tmp) / "busybox.tar"))
        spin_ref = pack_wasm_image(HELLO.parent / "spin.wasm", Path(tmp) / "spin.tar", "runwasm.bench/spin:1")
        d.ctr("images", "import", "--all-platforms", str(Path(tmp) / "spin.tar"))
        d.ctr(*d.run_args(bb_ref, "mem-runc", "sleep", "60", runtime=RUNC_RUNTIME, rm=False, detach=True))
        d.ctr(*d.run_args(spin_ref, "mem-runwasm", runtime=RUNWASM_RUNTIME, rm=False, detach=True))
        time.sleep(0.5)
        ours = d.our_processes()
        runc = [p for p in ours if any(a.endswith("containerd-shim-runc-v2") for a in _cmdline(p))]
        if len(runc) != 1:
            raise RuntimeError(f"expected one containerd-shim-runc-v2 process, found {runc}")
        out.append(read_mem("runc shim (containerd-shim-runc-v2, busybox sleep)", runc[0]))
        server, zygote = runwasm_shim_pids(d.namespace, "mem-runwasm")
        out.append(read_mem("runwasm shim server under containerd (spin.wasm)", server))
        if zygote is not None:
            out.append(read_mem("runwasm zygote under containerd", zygote))
        # Containerd.close() kills and deletes every task and container of its namespace
    return out, None


def bench_memory() -> str:
    harness = asyncio.run(_harness_memory())
    ctrd, skipped = _containerd_memory()
    rows = [m.row() for m in harness + ctrd]
    lines = ["peak RSS (VmHWM), current RSS and PSS in MiB; the shim's figures are read before Shutdown",
             _table(("process", "pid", "VmHWM", "VmRSS", "Pss"), rows)]
    shim = sum(m.hwm for m in harness if not m.label.startswith("Wasm"))
    runc = next((m.hwm for m in ctrd if m.label.startswith("runc")), 0)
    lines.append(f"runwasm shim server + zygote (harness, after 1 hello run): {shim / MIB:.1f} MiB")
    if runc:
        lines.append(f"ratio runwasm (server + zygote) / runc shim, VmHWM: {shim / runc:.2f}x")
        under = sum(m.hwm for m in ctrd if m.label.startswith("runwasm"))
        lines.append(f"ratio under containerd (spin.wasm vs busybox sleep), VmHWM: {under / runc:.2f}x")
    else:
        lines.append(f"runc comparison skipped: {skipped}")
    return "\n".join(lines)


# --- 4. the other areas' benchmarks -------------------------------------------------------------

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
    parser.add_argument("--only", action="append", choices=SECTIONS,
                        help="run only this section of this file (repeatable; implies --skip-others)")
    args = parser.parse_args(argv)
    from runwasm.shim.template import key, process

    tpl_dir = tempfile.mkdtemp(prefix="rwb-", dir="/run")  # a private warm template, stopped at the end
    os.environ[key.ENV_DIR] = tpl_dir
    try:
        _main(args)
    finally:
        process.stop_templates(tpl_dir)
        shutil.rmtree(tpl_dir, ignore_errors=True)


def _main(args: argparse.Namespace) -> None:
    only = set(args.only or SECTIONS)
    print(f"runwasm bench on {os.uname().nodename} ({os.cpu_count()} cpus, Python {sys.version.split()[0]})")
    if "ctr" in only:
        _section("containerd: ctr run --rm", lambda: bench_ctr(args.n, args.warmup))
    if "harness" in only:
        _section("harness: tasks/s through one shim", lambda: bench_harness(args.tasks, args.inflight))
    if "memory" in only:
        _section("memory: peak RSS of shim, zygote and workload vs the runc shim", bench_memory)
    if not args.skip_others and not args.only:
        run_others(OTHER_BENCHES)


if __name__ == "__main__":
    main()
