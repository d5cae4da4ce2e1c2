"""TaskService with a real zygote and reaper: RPCs racing a Create (or Exec) that is still setting up.

The workload entry below blocks on a "gate" pipe before it reports ``ready``, so a test can
issue other RPCs while Create/Exec is awaiting the workload. Each scenario runs in a fresh
interpreter (``python -c``): the server side makes its process a child subreaper, which must
not leak into the pytest process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runwasm.shim.server.stdio import StdioPaths

ROOT = Path(__file__).resolve().parents[3]
ENTRY = "tests.shim.server.test_task:_entry"


def _entry(payload: dict[str, Any], fds: dict[str, int]) -> None:
    """Workload: wait for the gate, report ready, wait for start, wait for the gate again (an
    init), exit with ``payload["code"]``."""
    from runwasm.oci.control import report_ready, wait_start

    os.read(fds["gate"], 1)
    report_ready(fds["control"])
    wait_start(fds["control"])
    if payload.get("hold"):
        os.read(fds["gate"], 1)
    os._exit(int(payload.get("code", 0)))


class _Backend:
    """Spawns ``_entry``; container-wide operations are no-ops. Counts ``destroy`` calls."""

    kind = "wasm"

    def __init__(self, gates: dict[str, int]) -> None:
        self.gates = gates
        self.destroyed = 0
        self.spawned = 0
        self.init_pid = 0
        self.fail_destroy = False

    def plan_init(self) -> Any:
        from runwasm.shim.server.backends import Launch

        return Launch(entry=ENTRY, payload={"code": 3, "hold": True},
                      extra_fds={"gate": self.gates["init"]})

    def plan_exec(self, exec_id: str, process: Any, init_pid: int) -> Any:
        from runwasm.shim.server.backends import Launch

        return Launch(entry=ENTRY, payload={"code": 4}, extra_fds={"gate": self.gates["exec"]})

    def attach(self, pid: int) -> None:
        self.spawned = pid
        self.init_pid = self.init_pid or pid

    def started(self) -> None:
        pass

    def oom_watcher(self) -> None:
        return None

    def kill_all(self, sig: int, known: list[int]) -> None:
        for pid in known:
            os.kill(pid, sig)

    def destroy(self) -> None:
        self.destroyed += 1
        if self.fail_destroy:
            raise OSError(16, "cgroup busy (simulated)")


def _make_bundle(root: Path) -> Path:
    bundle = root / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "rootfs" / "m.wasm").write_bytes(b"\0asm\x01\0\0\0")
    (bundle / "config.json").write_text(json.dumps(
        {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["/m.wasm"], "cwd": "/"}}))
    return bundle


async def _scenario(name: str, tmp: str) -> dict[str, Any]:
    from runwasm.shim.common.errors import status_of
    from runwasm.shim.server.task import CreateRequest, TaskService
    from runwasm.shim.server.task_rpc import TaskRpc
    from tests.shim.serverside import server_side

    zygote, reaper = server_side()
    events: list[str] = []
    init_r, gate_w = os.pipe()  # the init's gate: one byte to get ready, one to exit after start
    exec_r, exec_w = os.pipe()
    backends: list[_Backend] = []

    def factory(kind: str, cid: str, spec: object, bundle: Path, rootfs: Path, opts: object, module: object) -> Any:
        backends.append(_Backend({"init": init_r, "exec": exec_r}))
        return backends[-1]

    service = TaskService("ns", zygote, reaper, lambda e: events.append(type(e).__name__), factory)
    shutdowns: list[bool] = []
    rpc = TaskRpc(service, lambda: shutdowns.append(True))
    bundle = _make_bundle(Path(tmp))
    out: dict[str, Any] = {}

    async def attempt(coro: Any) -> str:
        try:
            await coro
        except Exception as err:  # noqa: BLE001 - the status is what the scenario reports
            return status_of(err)
        return "ok"

    async def settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0.01)

    try:
        create = asyncio.create_task(service.create(CreateRequest(id="c1", bundle=str(bundle))))
        await asyncio.sleep(0)  # Create runs up to its first await: the zygote spawning the workload
        await rpc.Shutdown(None)  # type: ignore[arg-type]
        out["shutdown_while_spawning"] = bool(shutdowns)
        await settle()  # the workload is spawned and blocked on the gate
        if name == "record_during_create":
            out["record"] = json.loads((bundle / "runwasm.json").read_text())
            os.write(gate_w, b"xx")
            out["create"] = await attempt(create)
            await service.start("c1", "")
        elif name == "start_during_create":
            out["start"] = await attempt(service.start("c1", ""))
            os.write(gate_w, b"xx")
            out["create"] = await attempt(create)
            if out["start"] != "ok":
                await service.start("c1", "")
        elif name == "delete_during_create":
            out["delete"] = await attempt(service.delete("c1", ""))
            os.write(gate_w, b"xx")
            out["create"] = await attempt(create)
            out["destroyed"] = backends[0].destroyed
            await attempt(service.kill("c1", "", 9, False))
        elif name == "shutdown_during_create":
            await rpc.Shutdown(None)  # type: ignore[arg-type]
            out["shutdown_during_create"] = bool(shutdowns)
            os.write(gate_w, b"xx")
            out["create"] = await attempt(create)
            await service.start("c1", "")
        elif name == "state_save_fails_after_ready":
            (bundle / "runwasm.json").unlink()  # the post-ready save of the pid cannot write
            (bundle / "runwasm.json").mkdir()
            os.write(gate_w, b"xx")
            out["create"] = await attempt(create)
            out["registered"] = "c1" in service.containers
            out["destroyed"] = backends[0].destroyed
            pid = backends[0].spawned
            out["workload_gone"] = not Path(f"/proc/{pid}").exists()
        elif name == "start_after_unreaped_death":
            os.write(gate_w, b"xx")
            pid = await create
            os.kill(pid, 9)
            while Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z":
                time.sleep(0.005)  # noqa: ASYNC251 - not awaiting: the reaper must not run yet
            out["start"] = await attempt(service.start("c1", ""))
            out["state"] = service.containers["c1"].init.state.name
        elif name == "start_exec_during_exec":
            os.write(gate_w, b"x")
            await create
            await service.start("c1", "")
            ex = asyncio.create_task(service.exec("c1", "e1", json.dumps({"args": ["x"], "cwd": "/"}).encode(),
                                                  service.containers["c1"].init.stdio))
            await settle()
            out["start_exec"] = await attempt(service.start("c1", "e1"))
            os.write(exec_w, b"x")
            out["exec"] = await attempt(ex)
            if out["start_exec"] != "ok":
                await service.start("c1", "e1")
            await service.wait("c1", "e1")
            os.write(gate_w, b"x")
        elif name == "destroy_fails_on_delete":
            os.write(gate_w, b"xx")
            await create
            await service.start("c1", "")
            await asyncio.wait_for(service.wait("c1", ""), 10)
            backends[0].fail_destroy = True
            out["delete"] = await attempt(service.delete("c1", ""))
            out["registered"] = "c1" in service.containers
        if "c1" in service.containers:
            await asyncio.wait_for(service.wait("c1", ""), 10)
            await service.delete("c1", "")
        released = bundle / "runwasm-released"
        out["released"] = released.read_bytes().hex() if released.exists() else None
        out["init_pid"] = backends[0].init_pid if backends else 0
    finally:
        for fd in (gate_w, exec_w, init_r, exec_r):
            os.close(fd)
        zygote.close()
        await asyncio.sleep(0.05)
        reaper.reap()
    out["events"] = events
    return out


def _run(name: str, tmp: Path) -> dict[str, Any]:
    code = ("import asyncio, json, sys; from tests.shim.server.test_task import _scenario; "
            "print(json.dumps(asyncio.run(_scenario(sys.argv[1], sys.argv[2]))))")
    p = subprocess.run([sys.executable, "-c", code, name, str(tmp)], cwd=ROOT, capture_output=True,
                       timeout=60, check=False)
    assert p.returncode == 0, p.stderr.decode()
    out: dict[str, Any] = json.loads(p.stdout.decode().strip().splitlines()[-1])
    return out


def test_the_bundle_record_names_the_executor_before_the_workload_is_set_up(tmp_path: Path) -> None:
    """A server killed mid-Create (workload spawned, not ready) leaves ``runwasm.json`` for the
    ``delete`` action; it cleans an executor's record (the Wasm task's cgroup) only when the
    record names that kind, so the kind is in it before the executor made anything."""
    res = _run("record_during_create", tmp_path)
    assert res["record"]["kind"] == "wasm"
    assert res["record"]["pid"] == 0  # the pid is recorded once the workload is ready
    assert res["create"] == "ok"


def test_start_during_create_is_refused_and_events_stay_ordered(tmp_path: Path) -> None:
    res = _run("start_during_create", tmp_path)
    assert res["start"] == "failed_precondition"
    assert res["create"] == "ok"
    assert res["events"] == ["TaskCreate", "TaskStart", "TaskExit", "TaskDelete"]


def test_delete_during_create_is_refused_and_create_completes(tmp_path: Path) -> None:
    res = _run("delete_during_create", tmp_path)
    assert res["delete"] == "failed_precondition"
    assert res["create"] == "ok"
    assert res["destroyed"] == 0
    assert res["events"] == ["TaskCreate", "TaskExit", "TaskDelete"]


def test_shutdown_waits_for_a_create_in_progress(tmp_path: Path) -> None:
    res = _run("shutdown_during_create", tmp_path)
    assert res["shutdown_while_spawning"] is False
    assert res["shutdown_during_create"] is False
    assert res["create"] == "ok"
    assert res["events"] == ["TaskCreate", "TaskStart", "TaskExit", "TaskDelete"]


def test_start_of_an_exec_being_added_is_refused(tmp_path: Path) -> None:
    res = _run("start_exec_during_exec", tmp_path)
    assert res["start_exec"] == "failed_precondition"
    assert res["exec"] == "ok"
    assert res["events"] == ["TaskCreate", "TaskStart", "TaskExecAdded", "TaskExecStarted", "TaskExit",
                             "TaskExit", "TaskDelete"]


def test_create_failing_after_ready_releases_everything(tmp_path: Path) -> None:
    res = _run("state_save_fails_after_ready", tmp_path)
    assert res["create"] == "unknown"  # an I/O error of the server itself
    assert res["registered"] is False
    assert res["destroyed"] == 1
    assert res["workload_gone"] is True
    assert res["events"] == []


def test_start_of_a_workload_dead_but_not_yet_reaped(tmp_path: Path) -> None:
    res = _run("start_after_unreaped_death", tmp_path)
    assert res["start"] == "failed_precondition"
    assert res["state"] == "CREATED"
    assert res["events"] == ["TaskCreate", "TaskExit", "TaskDelete"]


def test_abort_of_a_reaped_process_signals_nobody() -> None:
    """Once the reaper recorded an exit the pid may belong to another process: no SIGKILL."""
    from runwasm.shim.server.process import Proc
    from runwasm.shim.server.task import TaskService

    other = subprocess.Popen(["sleep", "30"])  # stands in for a process that recycled the pid
    try:
        p = Proc("c1", "", other.pid, StdioPaths(), None)
        p.on_exit(1, 0)
        TaskService._abort(None, p)  # type: ignore[arg-type]
        with pytest.raises(subprocess.TimeoutExpired):
            other.wait(timeout=0.3)
    finally:
        other.kill()
        other.wait()


def test_delete_reports_the_task_deleted_even_when_releasing_resources_fails(tmp_path: Path) -> None:
    """containerd forgets the container after Delete; a failing cleanup is logged and retried by
    the ``delete`` action, not turned into an error that leaves containerd and the shim disagreeing."""
    out = _run("destroy_fails_on_delete", tmp_path)
    assert out["delete"] == "ok"
    assert out["registered"] is False
    assert out["events"][-1] == "TaskDelete", out["events"]
    assert out["released"] is None  # so the `delete` action runs its cleanup (scripts/launcher.c)


def test_a_clean_teardown_records_the_delete_response(tmp_path: Path) -> None:
    """Delete that released everything leaves ``runwasm-released`` with the pid and exit status
    the `delete` action would answer, which the native launcher answers from."""
    from runwasm.shim.common import wire

    out = _run("start_exec_during_exec", tmp_path)
    assert out["released"] is not None
    fields = {num: value for num, _wt, value in wire.fields(bytes.fromhex(out["released"]))}
    assert fields == {1: out["init_pid"], 2: 3}  # the init exits with payload["code"] = 3


def test_erofs_rootfs_cannot_join_an_existing_mount_namespace(tmp_path: Path) -> None:
    """A private EROFS rootfs and a spec that joins a mount namespace by path contradict each
    other: refused before anything is mounted."""
    from runwasm.oci.runtime_spec import RuntimeSpec
    from runwasm.shim.common.errors import InvalidArgumentError
    from runwasm.shim.common.mounts import MountSpec
    from runwasm.shim.server.task import CreateRequest, TaskService

    spec = RuntimeSpec.from_json({"ociVersion": "1.1.0", "process": {"args": ["/x"], "cwd": "/"},
                                  "linux": {"namespaces": [{"type": "mount", "path": "/proc/1/ns/mnt"}]}},
                                 source="test")
    req = CreateRequest(id="c1", bundle=str(tmp_path),
                        rootfs=(MountSpec("erofs", str(tmp_path / "layer.erofs"), ("ro",)),))
    service = object.__new__(TaskService)  # _mount_private uses no service state
    with pytest.raises(InvalidArgumentError, match="cannot join an existing mount namespace"):
        service._mount_private(req, spec, tmp_path, tmp_path / "rootfs")
    assert not (tmp_path / "layers").exists()


@pytest.mark.parametrize(("args", "wasm"), [
    (["/hello.wasm"], True), (["/app.wat", "x"], True), (["/m.wasm#run"], True), ([""], True), ([], True),
    (["/bin/true"], False), (["sh", "-c", "x.wasm"], False),
])
def test_only_a_task_that_does_not_look_like_wasm_prestarts_the_zygote(args: list[str], wasm: bool) -> None:
    from runwasm.oci.runtime_spec import RuntimeSpec
    from runwasm.shim.server.task import _looks_wasm

    spec = RuntimeSpec.from_json({"ociVersion": "1.0.2", "process": {"args": args, "cwd": "/"}})
    assert _looks_wasm(spec) is wasm
