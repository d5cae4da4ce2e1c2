"""Wasm tasks in cgroups of their own, through the real shim binary and the standalone harness:
the workload pid is in the cgroup, limits apply, Pids/Pause/Resume/Update/Stats work, the
cgroup is gone after Delete (also after a SIGKILLed shim), an exec joins it, and an OOM kill is reported as
TaskOOM before TaskExit 137. Plus the CPU nanocores sampler and shared-parent removal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import empty_pb2

from runwasm.linux.cgroups import CgroupV1, detect
from runwasm.linux.task_cgroup import (
    CPU_SAMPLE_INTERVAL_NS,
    CgroupSandbox,
    TaskCgroup,
    cpu_usage_ns,
    destroy_recorded,
)
from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
from runwasm.shim.harness.bundle import make_wasm_bundle
from runwasm.shim.harness.driver import Harness, TaskClient, connected, run_task
from tests.conftest import built_fixture

pytestmark = pytest.mark.privileged

MEM = Path("/sys/fs/cgroup/memory")
LIMIT = 64 << 20


def _bundle(h: Harness, cid: str, module: Path, resources: dict[str, Any] | None, cgroups_path: str = "") -> Path:
    bundle = h.new_bundle(cid)
    make_wasm_bundle(bundle, module, [], [])
    cfg = json.loads((bundle / "config.json").read_text())
    if resources is not None:
        cfg["linux"]["resources"] = resources
    if cgroups_path:
        cfg["linux"]["cgroupsPath"] = cgroups_path
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


def _procs(cg: Path) -> list[int]:
    return [int(x) for x in (cg / "cgroup.procs").read_text().split()]


async def _with_task(h: Harness, cid: str, bundle: Path, body: Callable[[TaskClient, int], Any]) -> None:
    """Create the task, run ``body(client, pid)``, then kill/wait/delete/shutdown and ``delete``."""
    address, version = await h.shim_start(cid, bundle)
    try:
        async with connected(address, version) as t:
            created = await t.call("Create", pb.CreateTaskRequest(id=cid, bundle=str(bundle)), pb.CreateTaskResponse)
            try:
                await body(t, created.pid)
            finally:
                await t.call("Kill", pb.KillRequest(id=cid, signal=9, all=True), empty_pb2.Empty)
                await t.call("Wait", pb.WaitRequest(id=cid), pb.WaitResponse)
                await t.call("Delete", pb.DeleteRequest(id=cid), pb.DeleteResponse)
                await t.call("Shutdown", pb.ShutdownRequest(id=cid), empty_pb2.Empty, timeout=3)
    finally:
        await h.shim_delete(cid, bundle)


def test_wasm_task_runs_in_its_own_cgroup_with_limits() -> None:
    cid = f"wcg-{os.getpid()}"
    cg = MEM / "runwasm" / "wasmtest" / cid

    async def body(t: TaskClient, pid: int) -> None:
        assert _procs(cg) == [pid]
        assert int((cg / "memory.limit_in_bytes").read_text()) == LIMIT
        assert pid in _procs(Path("/sys/fs/cgroup/pids/runwasm/wasmtest") / cid)
        await t.call("Start", pb.StartRequest(id=cid), pb.StartResponse)
        pids = await t.call("Pids", pb.PidsRequest(id=cid), pb.PidsResponse)
        assert [p.pid for p in pids.processes] == [pid]
        await t.call("Pause", pb.PauseRequest(id=cid), empty_pb2.Empty)
        assert (Path("/sys/fs/cgroup/freezer/runwasm/wasmtest") / cid / "freezer.state").read_text().strip() == "FROZEN"
        await t.call("Resume", pb.ResumeRequest(id=cid), empty_pb2.Empty)
        update = pb.UpdateTaskRequest(id=cid)
        update.resources.type_url = "runtime-spec/LinuxResources"
        update.resources.value = json.dumps({"memory": {"limit": LIMIT * 2}}).encode()
        await t.call("Update", update, empty_pb2.Empty)
        assert int((cg / "memory.limit_in_bytes").read_text()) == LIMIT * 2
        stats = await t.call("Stats", pb.StatsRequest(id=cid), pb.StatsResponse)
        assert stats.stats.type_url.endswith("io.containerd.cgroups.v1.Metrics")
        assert len(stats.stats.value) > 0

    async def main() -> None:
        async with Harness() as h:
            bundle = _bundle(h, cid, built_fixture("wasm", "sleep.wasm"), {"memory": {"limit": LIMIT}},
                             f"/runwasm/wasmtest/{cid}")
            await _with_task(h, cid, bundle, body)
            assert not (bundle / "wasm-state.json").exists()

    asyncio.run(main())
    assert not cg.exists()
    assert not (MEM / "runwasm" / "wasmtest").exists()


def test_wasm_task_growing_memory_is_oom_killed_and_reported_first() -> None:
    cid = f"woom-{os.getpid()}"
    limit = 48 << 20

    async def main() -> tuple[int, list[str]]:
        async with Harness() as h:
            bundle = _bundle(h, cid, built_fixture("linux", "memhog.wasm"),
                             {"memory": {"limit": limit, "swap": limit}})
            r = await run_task(h, cid, bundle)
            return r.exit_status, h.events.topics(cid)

    status, topics = asyncio.run(main())
    assert status == 137
    assert "/tasks/oom" in topics, topics
    assert topics.index("/tasks/oom") < topics.index("/tasks/exit"), topics
    assert not list(MEM.glob(f"runwasm/*/{cid}"))


@pytest.mark.privileged
def test_wasm_task_cgroup_is_removed_by_delete_after_shim_sigkill() -> None:
    cid = f"wkill-{os.getpid()}"
    cg = MEM / "runwasm" / "wasmtest" / cid

    async def main() -> bool:
        async with Harness() as h:
            bundle = _bundle(h, cid, built_fixture("wasm", "sleep.wasm"), {"memory": {"limit": LIMIT}},
                             f"/runwasm/wasmtest/{cid}")
            address, version = await h.shim_start(cid, bundle)
            async with connected(address, version) as t:
                created = await t.call("Create", pb.CreateTaskRequest(id=cid, bundle=str(bundle)),
                                       pb.CreateTaskResponse)
                server = _ppid(created.pid)
                assert _procs(cg) == [created.pid]
                os.kill(server, signal.SIGKILL)
            await h.shim_delete(cid, bundle)
            gone = not cg.exists()
            destroy_recorded(bundle)  # what delete should have done: leaves nothing behind either way
            return gone

    try:
        assert asyncio.run(main()), "delete left the Wasm task's cgroup behind"
    finally:
        assert not cg.exists()


def _ppid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def test_sandbox_record_destroys_after_owner_is_gone(tmp_path: Path) -> None:
    sb = CgroupSandbox.create(tmp_path, "rec", "unit", None)
    leaf = MEM / "runwasm" / "unit" / "rec"
    assert leaf.is_dir()
    assert (tmp_path / "wasm-state.json").exists()
    assert destroy_recorded(tmp_path)
    assert not leaf.exists()
    assert not (MEM / "runwasm" / "unit").exists()
    assert not destroy_recorded(tmp_path)
    sb.destroy()  # idempotent


def test_shared_parent_is_left_to_the_other_task() -> None:
    a = TaskCgroup.create("/runwasm/shared/a", None)
    b = TaskCgroup.create("/runwasm/shared/b", None)
    try:
        start = time.monotonic()
        assert a.destroy() == []
        assert time.monotonic() - start < 1.0, "waited for a parent another task still uses"
        assert (MEM / "runwasm" / "shared" / "b").is_dir()
    finally:
        assert b.destroy() == []
    assert not (MEM / "runwasm" / "shared").exists()


def _cpu_used_at_least(tc: TaskCgroup, ns: int) -> None:
    """Wait until the cgroup's own counter reaches ``ns`` (its busy child makes progress)."""
    deadline = time.monotonic() + 120  # only against a hang: no figure depends on the wait
    while cpu_usage_ns(tc.cgroup) < ns:
        assert time.monotonic() < deadline, f"cgroup used {cpu_usage_ns(tc.cgroup)} ns of CPU, waiting for {ns}"
        time.sleep(0.01)


def test_cpu_nanocores_from_the_cgroups_usage_counter() -> None:
    """nanocores = usage delta / sample interval, from the cgroup's counter: the samples are
    taken at given (not real) times and the counter is read just before and after each one, so
    the result is known whatever the machine's load."""
    tc = TaskCgroup.create("/runwasm/unit/cpu", None)
    second = 10**9
    try:
        pid = os.fork()
        if pid == 0:
            while True:  # busy child
                pass
        tc.attach(pid)
        _cpu_used_at_least(tc, second // 5)  # a usage well above 0: a total is not a delta
        t0 = 5_000 * second
        before0 = cpu_usage_ns(tc.cgroup)
        tc.sample_cpu(now_ns=t0)
        after0 = cpu_usage_ns(tc.cgroup)
        assert tc.cpu_nanocores() is None
        tc.sample_cpu(now_ns=t0 + CPU_SAMPLE_INTERVAL_NS - 1)  # too soon: not kept
        assert tc.cpu_nanocores() is None
        _cpu_used_at_least(tc, after0 + second // 5)
        before1 = cpu_usage_ns(tc.cgroup)
        tc.sample_cpu(now_ns=t0 + 2 * second)
        after1 = cpu_usage_ns(tc.cgroup)
        cores = tc.cpu_nanocores()
        assert cores is not None
        assert (before1 - after0) // 2 <= cores <= (after1 - before0) // 2, (cores, before0, after0, before1, after1)
        _cpu_used_at_least(tc, after1 + second // 5)
        before2 = cpu_usage_ns(tc.cgroup)
        tc.sample_cpu(now_ns=t0 + 3 * second)  # the last two kept samples count: one second apart
        after2 = cpu_usage_ns(tc.cgroup)
        cores = tc.cpu_nanocores()
        assert cores is not None
        assert before2 - after1 <= cores <= after2 - before1
        assert tc.kill_all(signal.SIGKILL) == 1
        os.waitpid(pid, 0)
    finally:
        tc.destroy()
    assert isinstance(detect("/x"), CgroupV1)


def test_a_populated_leaf_in_any_hierarchy_is_already_exists_and_nothing_is_left() -> None:
    """create() refuses a path whose cgroup already holds a process in one hierarchy (here the
    last one it walks) and removes what it made in the others before raising."""
    from runwasm.linux.errors import AlreadyExistsError

    rel = f"runwasm/unit-{os.getpid()}/taken"
    probe = detect("/" + rel)
    assert isinstance(probe, CgroupV1)
    last = Path(max(str(m) for m in probe.hierarchies.values()))
    first = Path(min(str(m) for m in probe.hierarchies.values()))
    (last / rel).mkdir(parents=True)
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    try:
        (last / rel / "cgroup.procs").write_text(str(pid))
        with pytest.raises(AlreadyExistsError, match="it exists and has processes"):
            TaskCgroup.create("/" + rel, None)
        assert not (first / rel).exists(), "the refused create left a cgroup behind"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        (last / rel).rmdir()
        (last / rel).parent.rmdir()



def test_wasm_exec_joins_its_containers_cgroup_before_exec_returns() -> None:
    """An exec into a Wasm container is in the container's cgroup, in every v1 hierarchy, as soon
    as Exec returns (it joins itself before ``ready``, before any of its code runs)."""
    from google.protobuf import any_pb2

    cid = f"wcx-{os.getpid()}"
    rel = f"runwasm/wasmtest/{cid}"

    async def body(t: TaskClient, pid: int) -> None:
        await t.call("Start", pb.StartRequest(id=cid), pb.StartResponse)
        proc = {"args": ["/sleep.wasm"], "cwd": "/", "env": [], "user": {"uid": 0, "gid": 0}}
        await t.call("Exec", pb.ExecProcessRequest(
            id=cid, exec_id="e1", spec=any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Process",
                                                   value=json.dumps(proc).encode())), empty_pb2.Empty)
        state = await t.call("State", pb.StateRequest(id=cid, exec_id="e1"), pb.StateResponse)
        hierarchies = detect("/" + rel)
        assert isinstance(hierarchies, CgroupV1)
        for mountpoint in set(hierarchies.hierarchies.values()):
            assert state.pid in _procs(mountpoint / rel), (mountpoint, state.pid)
        await t.call("Kill", pb.KillRequest(id=cid, exec_id="e1", signal=9), empty_pb2.Empty)
        await t.call("Wait", pb.WaitRequest(id=cid, exec_id="e1"), pb.WaitResponse)
        await t.call("Delete", pb.DeleteRequest(id=cid, exec_id="e1"), pb.DeleteResponse)

    async def main() -> None:
        async with Harness() as h:
            bundle = _bundle(h, cid, built_fixture("wasm", "sleep.wasm"), None, "/" + rel)
            await _with_task(h, cid, bundle, body)

    asyncio.run(main())
    assert not (MEM / rel).exists()
