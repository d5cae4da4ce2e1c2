"""``runwasm stress``: task throughput through ONE shim, like runwasi's stress test.

The harness plays containerd (``shim/harness/driver.py``). All tasks carry the same
``io.containerd.runwasm.v1.group`` annotation, so they go to one shim server; an anchor
container (created, never started) keeps that server alive between tasks. Per task:
Create+Start (timed together), then Wait+Delete (timed together); with ``full`` also the
``shim start`` before and the ``shim delete`` after, as containerd runs them per container.
``n`` tasks, at most ``inflight`` at once, after one untimed warm-up task (which also fills the
compiled-module cache, so the module runs precompiled).

The report also names the executor the shim used (``executor_of``: from the shim's log), where
the harness kept its bundles (a tmpfs when there is one: ``default_state_parent``) and the CPU
each process spent per timed task (``CpuSampler``: harness, shim server, zygote, workloads).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

GROUP_ANNOTATION = "io.containerd.runwasm.v1.group"


class StressError(Exception):
    """The stress run could not start (its warm-up task failed)."""


@dataclass(frozen=True, slots=True)
class StressResult:
    tasks: int
    inflight: int
    failures: int
    errors: tuple[str, ...]
    seconds: float
    create_start: tuple[float, ...]  # seconds per successful task
    wait_delete: tuple[float, ...]
    cpu_ms: tuple[tuple[str, float], ...] = ()  # CPU per timed task, by process (``CpuSampler``)
    executor: str = ""  # how the shim ran the tasks (``executor_of``)
    state_parent: str = ""  # where the harness's bundles were (``default_state_parent``)

    @property
    def rate(self) -> float:
        return (self.tasks - self.failures) / self.seconds if self.seconds > 0 else 0.0


def percentile(samples: tuple[float, ...], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``samples``; NaN when empty."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def report(r: StressResult) -> str:
    def ms(xs: tuple[float, ...], q: float) -> str:
        return f"{percentile(xs, q) * 1000:.1f}"

    lines = [f"{r.tasks} tasks, {r.inflight} in flight: {r.rate:.1f} tasks/s, {r.failures} failed, "
             f"{r.seconds:.2f} s",
             f"  executor: {r.executor or 'unknown'}; bundles under {r.state_parent or '?'}",
             f"  create+start  p50 {ms(r.create_start, 50)} ms  p99 {ms(r.create_start, 99)} ms",
             f"  wait+delete   p50 {ms(r.wait_delete, 50)} ms  p99 {ms(r.wait_delete, 99)} ms"]
    if r.cpu_ms:
        lines.append("  CPU per task  " + "  ".join(f"{name} {v:.1f} ms" for name, v in r.cpu_ms))
    lines += [f"  error: {e}" for e in r.errors[:3]]
    return "\n".join(lines)


def default_state_parent() -> str:
    """Where the harness keeps its bundles: ``/run`` when it is a tmpfs (as on a systemd host,
    where containerd keeps its bundles under ``/run/containerd``), else ``/dev/shm``. On a host
    whose ``/run`` is a disk file system, creating a bundle (and the shim's state files in it)
    there cost ~4 ms of CPU per task on this VM's ext4, against ~0.5 ms on tmpfs, which is the
    harness's file system, not the shim."""
    for candidate in ("/run", "/dev/shm"):
        try:
            with open("/proc/self/mounts") as f:
                if any(line.split()[1:3] == [candidate, "tmpfs"] for line in f):
                    return candidate
        except OSError:
            break
    return "/run"


async def run_stress(module: Path, tasks: int, inflight: int, *, full: bool = False,
                     expect_status: int = 0, state_parent: str | None = None) -> StressResult:
    """Run the stress loop (module doc); the harness's bundles live in a fresh directory under
    ``state_parent`` (default: ``default_state_parent()``), removed at the end."""
    import shutil
    import tempfile

    if tasks < 1 or inflight < 1:
        raise ValueError(f"stress needs -n >= 1 and -p >= 1, got -n {tasks} -p {inflight}")
    parent = state_parent or default_state_parent()
    state_dir = Path(tempfile.mkdtemp(prefix="runwasm-stress-", dir=parent))
    try:
        return await _run(module, tasks, inflight, full, expect_status, state_dir)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


async def _run(module: Path, tasks: int, inflight: int, full: bool, expect_status: int,
               state_dir: Path) -> StressResult:
    from google.protobuf import empty_pb2

    from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
    from runwasm.shim.harness.bundle import make_wasm_bundle
    from runwasm.shim.harness.driver import Harness, connected

    tag = f"stress{os.getpid()}-{time.monotonic_ns() % 10**6}"
    group = {GROUP_ANNOTATION: tag}
    async with Harness(state_dir=state_dir) as h:
        anchor = f"{tag}-anchor"
        anchor_bundle = h.new_bundle(anchor)
        make_wasm_bundle(anchor_bundle, module, [], [], annotations=group)
        address, version = await h.shim_start(anchor, anchor_bundle)
        try:
            async with connected(address, version) as t:
                anchor_pid = (await t.call("Create", pb.CreateTaskRequest(id=anchor, bundle=str(anchor_bundle)),
                                           pb.CreateTaskResponse)).pid
                shim_pid = (await t.call("Connect", pb.ConnectRequest(id=anchor), pb.ConnectResponse)).shim_pid
                counter = 0

                async def one() -> tuple[float, float]:
                    nonlocal counter
                    counter += 1
                    cid = f"{tag}-{counter}"
                    bundle = h.new_bundle(cid)
                    make_wasm_bundle(bundle, module, [], [], annotations=group)
                    if full:
                        got, _ = await h.shim_start(cid, bundle)
                        if got != address:
                            raise RuntimeError(f"task {cid} went to another shim: {got} != {address}")
                    try:
                        t0 = time.perf_counter()
                        await t.call("Create", pb.CreateTaskRequest(id=cid, bundle=str(bundle)), pb.CreateTaskResponse)
                        await t.call("Start", pb.StartRequest(id=cid), pb.StartResponse)
                        t1 = time.perf_counter()
                        waited = await t.call("Wait", pb.WaitRequest(id=cid), pb.WaitResponse)
                        await t.call("Delete", pb.DeleteRequest(id=cid), pb.DeleteResponse)
                        t2 = time.perf_counter()
                    finally:
                        if full:
                            await h.shim_delete(cid, bundle)
                    if waited.exit_status != expect_status:
                        raise RuntimeError(f"task {cid} exited {waited.exit_status}, expected {expect_status}")
                    return t1 - t0, t2 - t1

                try:
                    try:
                        await one()  # warm-up: first spawn, module cache filled
                    except (RuntimeError, OSError) as err:
                        raise StressError(f"the warm-up task failed, nothing timed: {err}") from err
                    sem = asyncio.Semaphore(inflight)

                    async def limited() -> tuple[float, float]:
                        async with sem:
                            return await one()

                    sampler = CpuSampler(shim_pid, {anchor_pid})
                    t0 = time.perf_counter()
                    done = await asyncio.gather(*(limited() for _ in range(tasks)), return_exceptions=True)
                    seconds = time.perf_counter() - t0
                    cpu = sampler.per_task(tasks)
                finally:  # the anchor goes, so the server exits
                    await t.call("Delete", pb.DeleteRequest(id=anchor), pb.DeleteResponse)
                    await t.call("Shutdown", pb.ShutdownRequest(id=anchor), empty_pb2.Empty, timeout=5)
                ok = [r for r in done if isinstance(r, tuple)]
                errors = tuple(repr(r) for r in done if isinstance(r, BaseException))
        finally:
            await h.shim_delete(anchor, anchor_bundle)
        executor = executor_of(h.log_files)
    return StressResult(tasks, inflight, tasks - len(ok), errors, seconds,
                        tuple(a for a, _ in ok), tuple(b for _, b in ok), cpu, executor, str(state_dir.parent))


DEFAULT_EXECUTOR = "default: one process per task (zygote fork, then wasmtime-min after Start)"
NATIVE_EXECUTOR = ("default: one process per task (runwasm-wasm-exec spawned by the server, then wasmtime-min "
                   "after Start; a module's first task: zygote fork)")
IN_PROCESS_MARK = " runs in process (wasmtime-py): "


def executor_of(log_files: list[Path]) -> str:
    """How the shim ran the tasks, from its log: the default route (a workload process that execs
    ``wasmtime-min``: spawned natively when the server logged ``NATIVE_MARK``, else forked by the
    zygote), unless it logged that a task runs in process (``runwasm.wasm.task`` logs one line at
    Create with the reason)."""
    from runwasm.shim.spawn.native import NATIVE_MARK

    native = False
    for path in log_files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if IN_PROCESS_MARK in line:  # the reason ends where the logfmt msg="..." does
                reason = re.split(r'(?<!\\)"', line.split(IN_PROCESS_MARK, 1)[1], maxsplit=1)[0]
                return f"in process (wasmtime-py), one process per task: {reason.strip()}"
            if NATIVE_MARK in line:
                native = True
    return NATIVE_EXECUTOR if native else DEFAULT_EXECUTOR


def _ticks(pid: int) -> tuple[int, int]:
    """(own utime+stime, reaped children's cutime+cstime) of ``pid`` in clock ticks; (0, 0) when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return 0, 0
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.update(int(x) for x in f.read().split())
    except OSError:
        pass
    return out


class CpuSampler:
    """CPU spent during the timed part, split by process: this harness (``getrusage``), the shim
    server (``/proc/<pid>/stat``), its long-lived children present at the start (the zygote; the
    anchor's workload, idle) and its reaped children (the tasks' workloads: the server's
    cutime+cstime). Shared between concurrent pods when the server is a node server hosting
    others (then the figure is an upper bound for this run)."""

    def __init__(self, server_pid: int, exclude: set[int]) -> None:
        self.server = server_pid
        self.helpers = sorted(_children(server_pid) - exclude)
        self._t0 = self._sample()

    def _sample(self) -> tuple[float, ...]:
        import resource

        me = resource.getrusage(resource.RUSAGE_SELF)
        own, reaped = _ticks(self.server)
        helpers = sum(_ticks(p)[0] for p in self.helpers)
        hz = os.sysconf("SC_CLK_TCK")
        return (me.ru_utime + me.ru_stime, own / hz, helpers / hz, reaped / hz)

    def per_task(self, tasks: int) -> tuple[tuple[str, float], ...]:
        t1 = self._sample()
        names = ("harness", "server", "zygote", "workloads")
        return tuple((name, (b - a) * 1000 / max(tasks, 1)) for name, a, b in zip(names, self._t0, t1, strict=True))


def median_ms(xs: tuple[float, ...]) -> float:
    return statistics.median(xs) * 1000 if xs else float("nan")
