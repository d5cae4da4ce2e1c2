"""Benchmark: cost per container (issue 8), runwasm vs the runc shim in the same run.

Run: ``.venv/bin/python -m tests.bench_cost [N]`` (also part of ``make bench``). For containerd
1.6 (Debian's, on PATH) and 2.3.4 (``$RUNWASM_CONTAINERD23_BIN``, default
``../shared/tools/containerd-2.3.4/bin``; skipped with the reason when absent), each in a private
daemon, with the shims using a private warm template (``shim/template/``) stopped at the end:

1. ``ctr run --rm`` wall time, median of N after 2 warm-ups, cases interleaved: Wasm hello via
   runwasm, busybox ``/bin/true`` via runc, busybox ``/bin/true`` via runwasm's Linux executor
   (warm node: the template runs); then the first container after boot: the template stopped
   before each of N/2 runs of the Wasm hello, each right after a runc busybox run (the ratio is
   given against the warm runc median and as the median of these per-round ratios); the
   ``start`` that finds no template launches one and waits for it, as on a node after boot.
2. PSS per pod: 10 pods started with ``ctr run -d`` (each its own shim server), runwasm running
   ``sleep.wasm``, runc running busybox ``sleep``; PSS (``/proc/<pid>/smaps_rollup``) summed over
   every process started for the daemon (shims, zygotes, workloads; found by their
   ``TTRPC_ADDRESS``), plus the template for runwasm (node-wide, counted once), divided by 10.

Then, through the harness (no containerd): the PSS one more running ``sleep.wasm`` adds to a pod
(5 more tasks in one shim, delta / 5), and ``runwasm stress`` (``shim/harness/stress.py``) sequential and
8 in flight. No figure is asserted.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WASM = ROOT / "fixtures" / "build" / "wasm"
PODS = 10


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children_of(parents: list[int]) -> list[int]:
    """Processes whose parent is one of ``parents`` (workloads that exec'd wasmtime-min no longer
    look like the server)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) in parents:
                out.append(int(name))
    return out


def template_pids(directory: str) -> list[int]:
    from runwasm.shim.template import key

    out = []
    for name in os.listdir(directory):
        if name.endswith(".pid"):
            try:
                pid = int(Path(directory, name).read_text())
                if key.TEMPLATE_ACTION.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    out.append(pid)
            except (OSError, ValueError):
                pass
    return out


def _timed(argv: list[str], env: dict[str, str], expect: str) -> float | None:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    dt = time.perf_counter() - t0
    if proc.returncode != 0 or proc.stdout != expect:
        print(f"  run failed: exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[:200]}")
        return None
    return dt


def _wait_for(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def bench_daemon(label: str, flavour: str, n: int, tpl_dir: str) -> list[str]:
    from fixtures.images import busybox_image
    from runwasm.shim.template import process
    from tests.integration.daemon import RUNC_RUNTIME, RUNWASM_RUNTIME, Containerd
    from tests.integration.images import pack_wasm_image

    out: list[str] = []
    with Containerd(namespace=f"rwcost{os.getpid()}", flavour=flavour) as d, \
            tempfile.TemporaryDirectory() as tmp:
        wasm_ref = pack_wasm_image(WASM / "hello.wasm", Path(tmp) / "hello.tar", "runwasm.bench/hello:1")
        d.ctr("images", "import", "--all-platforms", str(Path(tmp) / "hello.tar"))
        sleep_ref = pack_wasm_image(WASM / "sleep.wasm", Path(tmp) / "sleep.tar", "runwasm.bench/sleep:1")
        d.ctr("images", "import", "--all-platforms", str(Path(tmp) / "sleep.tar"))
        bb_ref = "runwasm.bench/busybox:1"
        busybox_image(Path(tmp) / "busybox.tar", bb_ref)
        d.ctr("images", "import", str(Path(tmp) / "busybox.tar"))
        env = d.env()
        cases = [("runwasm hello.wasm", wasm_ref, RUNWASM_RUNTIME, (), "hello from wasm\n"),
                 ("runc    busybox /bin/true", bb_ref, RUNC_RUNTIME, ("/bin/true",), ""),
                 ("runwasm busybox /bin/true", bb_ref, RUNWASM_RUNTIME, ("/bin/true",), "")]
        samples: dict[str, list[float]] = {c[0]: [] for c in cases}
        seq = 0
        for i in range(2 + n):
            for name, ref, runtime, args, expect in cases:
                seq += 1
                dt = _timed(d.ctr_argv(*d.run_args(ref, f"c{seq}", *args, runtime=runtime)), env, expect)
                if dt is not None and i >= 2:
                    samples[name].append(dt)
        cold: list[float] = []
        paired: list[float] = []  # each cold run over a runc run of the same round (load drifts)
        for _ in range(max(3, n // 2)):
            seq += 1
            runc_dt = _timed(d.ctr_argv(*d.run_args(bb_ref, f"c{seq}", "/bin/true", runtime=RUNC_RUNTIME)), env, "")
            process.stop_templates(tpl_dir)
            seq += 1
            dt = _timed(d.ctr_argv(*d.run_args(wasm_ref, f"c{seq}")), env, "hello from wasm\n")
            if dt is not None:
                cold.append(dt)
                if runc_dt:
                    paired.append(dt / runc_dt)
            _wait_for(lambda: bool(template_pids(tpl_dir)), 30)
            time.sleep(1.0)  # let the new template finish its imports before the next sample
        med = {k: statistics.median(v) * 1000 if v else float("nan") for k, v in samples.items()}
        runc = med["runc    busybox /bin/true"]
        out.append(f"ctr run --rm, containerd {label} (median of n={n} after 2 warm-ups, interleaved; ms)")
        for name in samples:
            out.append(f"  {name:<34} {med[name]:7.1f}   ratio to runc {med[name] / runc:.2f}x")
        c = statistics.median(cold) * 1000 if cold else float("nan")
        pr = statistics.median(paired) if paired else float("nan")
        out.append(f"  {'runwasm hello.wasm, no template':<34} {c:7.1f}   ratio to runc {c / runc:.2f}x"
                   f"   (first container after boot; n={len(cold)}; median of per-round ratios to a"
                   f" runc run just before: {pr:.2f}x)")

        # --- PSS per pod -------------------------------------------------------------------
        _wait_for(lambda: bool(template_pids(tpl_dir)), 30)
        time.sleep(1.0)
        per_pod: dict[str, float] = {}
        for name, ref, runtime, args in (("runwasm sleep.wasm", sleep_ref, RUNWASM_RUNTIME, ()),
                                         ("runc    busybox sleep", bb_ref, RUNC_RUNTIME, ("sleep", "3600"))):
            ids = []
            for _ in range(PODS):
                seq += 1
                ids.append(f"p{seq}")
                d.run(ref, ids[-1], *args, runtime=runtime, rm=False, detach=True, check=True)
            _wait_for(lambda ids=ids: all(d.tasks().get(i, (0, ""))[1] == "RUNNING" for i in ids), 30)
            time.sleep(1.0)
            pids = d.our_processes()
            total = sum(pss_kib(p) for p in pids)
            extra = ""
            if runtime == RUNWASM_RUNTIME:
                tpl = sum(pss_kib(p) for p in template_pids(tpl_dir))
                total += tpl
                extra = f" (incl. the template's {tpl / 1024:.1f} MiB)"
            per_pod[name] = total / PODS / 1024
            out.append(f"  PSS per pod, {PODS} pods, {name:<22} {per_pod[name]:6.1f} MiB"
                       f"   ({len(pids)} processes{extra})")
            for cid in ids:
                d.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
            for cid in ids:
                _wait_for(lambda c=cid: d.tasks().get(c, (0, "STOPPED"))[1] == "STOPPED", 10)
                d.ctr("task", "rm", "-f", cid, check=False)
                d.ctr("containers", "rm", cid, check=False)
        out.append(f"  ratio PSS per pod runwasm / runc: "
                   f"{per_pod['runwasm sleep.wasm'] / per_pod['runc    busybox sleep']:.2f}x")
        from runwasm.shim.harness.stress import report
        from runwasm.shim.harness.stress_containerd import run_stress_containerd

        for tasks, inflight in ((max(30, 5 * n), 1), (max(60, 10 * n), 8)):
            r = run_stress_containerd(d.address, d.namespace, WASM / "hello.wasm", tasks, inflight)
            out.append(f"  runwasm stress --containerd (containerd {label}, its gRPC API, one shim, precompiled "
                       "hello): " + report(r).replace("\n", "\n  "))
    return out


async def _extra_task_pss(more: int) -> str:
    from google.protobuf import empty_pb2

    from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
    from runwasm.shim.harness.bundle import make_wasm_bundle
    from runwasm.shim.harness.driver import Harness, connected

    group = {"io.containerd.runwasm.v1.group": f"cost-{os.getpid()}"}
    tag = f"cost{os.getpid()}"
    async with Harness() as h:
        bundles = []
        for i in range(1 + more):
            b = h.new_bundle(f"{tag}-{i}")
            make_wasm_bundle(b, WASM / "sleep.wasm", [], [], annotations=group)
            bundles.append((f"{tag}-{i}", b))
        address, version = await h.shim_start(*bundles[0])
        for cid, b in bundles[1:]:
            await h.shim_start(cid, b)

        def pod_pss() -> int:
            from tests.shim.e2e.helpers import server_pids

            servers = server_pids(h.root)  # the server and zygote, and Python workloads (same cmdline)
            return sum(pss_kib(p) for p in {*servers, *children_of(servers)})

        async with connected(address, version) as t:
            results = []
            for n, (cid, b) in enumerate(bundles):
                await t.call("Create", pb.CreateTaskRequest(id=cid, bundle=str(b)), pb.CreateTaskResponse)
                await t.call("Start", pb.StartRequest(id=cid), pb.StartResponse)
                if n == 0:
                    await asyncio.sleep(1.0)
                    results.append(pod_pss())
            await asyncio.sleep(1.0)
            results.append(pod_pss())
            for cid, _b in bundles:
                await t.call("Kill", pb.KillRequest(id=cid, signal=9), empty_pb2.Empty)
                await t.call("Wait", pb.WaitRequest(id=cid), pb.WaitResponse)
                await t.call("Delete", pb.DeleteRequest(id=cid), pb.DeleteResponse)
            await t.call("Shutdown", pb.ShutdownRequest(id=bundles[0][0]), empty_pb2.Empty, timeout=3)
        for cid, b in bundles:
            await h.shim_delete(cid, b)
    one, all_ = results
    return (f"harness: one pod, PSS of server + zygote + workloads: 1 sleep.wasm {one / 1024:.1f} MiB, "
            f"{1 + more} tasks {all_ / 1024:.1f} MiB: {(all_ - one) / more / 1024:.2f} MiB per additional task")


def main() -> None:
    from runwasm.shim.template import key, process
    from tests.integration.daemon import CONTAINERD23_MISSING, containerd23_bin, containerd_binary

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    tpl_dir = tempfile.mkdtemp(prefix="rwb-", dir="/run")
    old_dir = os.environ.get(key.ENV_DIR)
    os.environ[key.ENV_DIR] = tpl_dir  # a private template, stopped at the end
    try:
        lines: list[str] = []
        daemons: list[tuple[str, str]] = []
        if containerd_binary() is not None:
            daemons.append(("1.6", "1.6"))
        else:
            lines.append("containerd 1.6: skipped (containerd not on PATH)")
        if containerd23_bin() is not None:
            daemons.append(("2.3.4", "2.3"))
        else:
            lines.append(f"containerd 2.3.4: skipped: {CONTAINERD23_MISSING}")
        for label, flavour in daemons:
            lines += bench_daemon(label, flavour, n, tpl_dir)
            print("\n".join(lines), flush=True)
            lines = []
        print(asyncio.run(_extra_task_pss(5)), flush=True)
        from runwasm.shim.harness import stress

        for tasks, inflight in ((max(50, 10 * n), 1), (max(100, 20 * n), 8)):
            result = asyncio.run(stress.run_stress(WASM / "hello.wasm", tasks, inflight))
            print("runwasm stress (harness, one shim, precompiled hello): " + stress.report(result), flush=True)
    finally:
        process.stop_templates(tpl_dir)
        shutil.rmtree(tpl_dir, ignore_errors=True)
        if old_dir is None:
            os.environ.pop(key.ENV_DIR, None)
        else:
            os.environ[key.ENV_DIR] = old_dir


if __name__ == "__main__":
    main()
