"""``runwasm stress``: task throughput through ONE shim, like runwasi's stress test.

The harness plays containerd (``shim/harness/driver.py``). All tasks carry the same
``io.containerd.runwasm.v1.group`` annotation, so they go to one shim server; an anchor
container (created, never started) keeps that server alive between tasks. Per task:
Create+Start (timed together), then Wait+Delete (timed together); with ``full`` also the
``shim start`` before and the ``shim delete`` after, as containerd runs them per container.
``n`` tasks, at most ``inflight`` at once, after one untimed warm-up task (which also fills the
compiled-module cache, so the module runs precompiled).
"""

from __future__ import annotations

import asyncio
import math
import os
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
             f"  create+start  p50 {ms(r.create_start, 50)} ms  p99 {ms(r.create_start, 99)} ms",
             f"  wait+delete   p50 {ms(r.wait_delete, 50)} ms  p99 {ms(r.wait_delete, 99)} ms"]
    lines += [f"  error: {e}" for e in r.errors[:3]]
    return "\n".join(lines)


async def run_stress(module: Path, tasks: int, inflight: int, *, full: bool = False,
                     expect_status: int = 0) -> StressResult:
    from google.protobuf import empty_pb2

    from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
    from runwasm.shim.harness.bundle import make_wasm_bundle
    from runwasm.shim.harness.driver import Harness, connected

    if tasks < 1 or inflight < 1:
        raise ValueError(f"stress needs -n >= 1 and -p >= 1, got -n {tasks} -p {inflight}")
    tag = f"stress{os.getpid()}-{time.monotonic_ns() % 10**6}"
    group = {GROUP_ANNOTATION: tag}
    async with Harness() as h:
        anchor = f"{tag}-anchor"
        anchor_bundle = h.new_bundle(anchor)
        make_wasm_bundle(anchor_bundle, module, [], [], annotations=group)
        address, version = await h.shim_start(anchor, anchor_bundle)
        try:
            async with connected(address, version) as t:
                await t.call("Create", pb.CreateTaskRequest(id=anchor, bundle=str(anchor_bundle)),
                             pb.CreateTaskResponse)
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

                    t0 = time.perf_counter()
                    done = await asyncio.gather(*(limited() for _ in range(tasks)), return_exceptions=True)
                    seconds = time.perf_counter() - t0
                finally:  # the anchor goes, so the server exits
                    await t.call("Delete", pb.DeleteRequest(id=anchor), pb.DeleteResponse)
                    await t.call("Shutdown", pb.ShutdownRequest(id=anchor), empty_pb2.Empty, timeout=5)
                ok = [r for r in done if isinstance(r, tuple)]
                errors = tuple(repr(r) for r in done if isinstance(r, BaseException))
        finally:
            await h.shim_delete(anchor, anchor_bundle)
    return StressResult(tasks, inflight, tasks - len(ok), errors, seconds,
                        tuple(a for a, _ in ok), tuple(b for _, b in ok))


def median_ms(xs: tuple[float, ...]) -> float:
    return statistics.median(xs) * 1000 if xs else float("nan")
