"""Warm standby (runtime option StandbySeconds): an idle server is adopted by the next start."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
from runwasm.shim.harness import Harness, connected, runtime_options
from tests.shim.e2e import helpers as e


async def _run_one(h: Harness, cid: str, bundle: Path, body: str) -> tuple[int, int, bytes]:
    """start (with options) → Connect → Create/Start/Wait/Delete/Shutdown → delete; (shim pid, exit, stdout)."""
    address, version = await h.shim_start(cid, bundle, runtime_options(config_body=body))
    _i, out, err = h.fifos(cid)
    r = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    try:
        async with connected(address, version) as t:
            shim_pid = (await t.call("Connect", pb.ConnectRequest(id=cid), pb.ConnectResponse)).shim_pid
            await t.call("Create", pb.CreateTaskRequest(id=cid, bundle=str(bundle), stdout=out, stderr=err),
                         pb.CreateTaskResponse)
            waiter = asyncio.create_task(e.wait(t, cid))
            await e.start(t, cid)
            status = (await waiter).exit_status
            data = os.read(r, 4096)
            await e.delete(t, cid)
            await e.shutdown(t, cid)
    finally:
        os.close(r)
        await h.shim_delete(cid, bundle)
    return shim_pid, status, data


def test_idle_server_is_adopted_by_the_next_start(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        pid1, status1, out1 = await _run_one(h, "sb1", e.make_bundle(h, "sb1", "hello.wasm"), "StandbySeconds = 10")
        assert (status1, out1) == (0, b"hello from wasm\n")
        await asyncio.sleep(0.2)
        assert pid1 in e.server_pids(h.root)  # idle, standing by (with its zygote)
        # a different container (another group, another socket): no new server is started
        pid2, status2, out2 = await _run_one(h, "sb2", e.make_bundle(h, "sb2", "exit7.wasm"), "StandbySeconds = 1")
        assert pid2 == pid1
        assert status2 == 7
        assert h.events.topics("sb2") == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
        log2 = h.log_files[-1].read_text()
        assert "standby shim server adopted for sb2" in log2
        # with StandbySeconds = 1 from sb2's start, the idle server exits about a second later
        await e.poll_until(lambda: not e.server_pids(h.root), 5, "the standby server to exit")

    e.run(legacy, body)


def test_without_the_option_the_server_exits_after_shutdown(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        pid1, _s, _o = await _run_one(h, "nb1", e.make_bundle(h, "nb1", "hello.wasm"), "")
        await e.poll_until(lambda: not e.server_pids(h.root), 5, "the server to exit")
        pid2, _s, _o = await _run_one(h, "nb2", e.make_bundle(h, "nb2", "hello.wasm"), "")
        assert pid2 != pid1

    e.run(legacy, body)
