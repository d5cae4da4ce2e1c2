"""Execs in a native container through the real shim: when the init exits, execs that outlive it
(no pid namespace) are killed and their exits are published before the init's, as runc's shim does."""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import any_pb2, empty_pb2

from runwasm.shim.api.events import task_pb2
from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
from runwasm.shim.harness import bundle as bundlemod
from runwasm.shim.harness.driver import Harness
from tests.conftest import built_fixture
from tests.shim.e2e import helpers as e

PROCESS_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"


def _exits(h: Harness, cid: str) -> list[str]:
    out = []
    for env in h.events.envelopes:
        if env.topic == "/tasks/exit":
            msg = task_pb2.TaskExit.FromString(env.event.value)
            if msg.container_id == cid:
                out.append(msg.id)
    return out


def test_init_exit_is_published_after_its_exec_exits(legacy: bool) -> None:
    rootfs = built_fixture("linux", "rootfs")

    async def body(h: Harness) -> None:
        bundle = Path(h.new_bundle("x1"))
        spec = bundlemod.base_spec(["/bin/sh", "-c", "read line"])  # exits when its stdin gets a line
        spec["root"]["path"] = str(rootfs)
        # no pid namespace of its own: nothing in the kernel ends the exec when the init exits
        spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "pid"]
        (bundle / "config.json").write_text(json.dumps(spec))
        async with e.shim(h, "x1", bundle) as t:
            stdin, out, err = h.fifos("x1")
            import os

            w = os.open(stdin, os.O_RDWR)
            await t.call("Create", pb.CreateTaskRequest(id="x1", bundle=str(bundle), stdin=stdin, stdout=out,
                                                        stderr=err), pb.CreateTaskResponse)
            await e.start(t, "x1")
            proc = {"args": ["/bin/sleep", "100"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}
            await t.call("Exec", pb.ExecProcessRequest(
                id="x1", exec_id="e1", spec=any_pb2.Any(type_url=PROCESS_URL, value=json.dumps(proc).encode())),
                empty_pb2.Empty)
            await t.call("Start", pb.StartRequest(id="x1", exec_id="e1"), pb.StartResponse)
            os.write(w, b"go\n")  # the init exits; the exec (sleep 100) must not keep it from being reported
            await h.events.wait_for("/tasks/exit", "x1", timeout=10)
            await e.wait(t, "x1")
            await e.poll_until(lambda: len(_exits(h, "x1")) == 2, 10, "both exits published")
            os.close(w)
            await t.call("Delete", pb.DeleteRequest(id="x1", exec_id="e1"), pb.DeleteResponse)
            await e.delete(t, "x1")
            await e.shutdown(t, "x1")
        assert _exits(h, "x1") == ["e1", "x1"]

    e.run(legacy, body)


def test_init_exit_kills_what_it_left_behind_without_a_pid_namespace(legacy: bool) -> None:
    """An init with no pid namespace of its own that forked a long-lived child (critest's hostPID
    nginx: a master and its worker): when the init exits the child is killed, as runc's shim does
    (``kill --all``), or it would hold the container's stdio and cgroup and StopPodSandbox hangs."""
    import asyncio
    import os
    import time

    rootfs = built_fixture("linux", "rootfs")

    async def body(h: Harness) -> None:
        bundle = Path(h.new_bundle("x2"))
        spec = bundlemod.base_spec(["/bin/sh", "-c", "sleep 100 & read line"])
        spec["root"]["path"] = str(rootfs)
        spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "pid"]
        (bundle / "config.json").write_text(json.dumps(spec))
        async with e.shim(h, "x2", bundle) as t:
            stdin, out, err = h.fifos("x2")
            w = os.open(stdin, os.O_RDWR)
            await t.call("Create", pb.CreateTaskRequest(id="x2", bundle=str(bundle), stdin=stdin, stdout=out,
                                                        stderr=err), pb.CreateTaskResponse)
            init = await e.start(t, "x2")
            deadline = time.monotonic() + 10
            while True:
                pids = [p.pid for p in (await t.call("Pids", pb.PidsRequest(id="x2"), pb.PidsResponse)).processes]
                if len(pids) == 2 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            [child] = [p for p in pids if p != init]
            os.write(w, b"go\n")  # the init exits, its sleep would live on
            await h.events.wait_for("/tasks/exit", "x2", timeout=10)
            await e.wait(t, "x2")
            await e.poll_until(lambda: not os.path.exists(f"/proc/{child}"), 10, "the init's child killed")
            os.close(w)
            await e.delete(t, "x2")
            await e.shutdown(t, "x2")

    e.run(legacy, body)
