"""The retired runtime option StandbySeconds: still accepted, logged as deprecated, no effect."""

from __future__ import annotations

import asyncio
import os

from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
from runwasm.shim.harness.driver import Harness, connected, runtime_options
from tests.shim.e2e import helpers as e


def test_standby_seconds_is_accepted_logged_and_ignored(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        cid = f"sbr{os.getpid()}"
        bundle = e.make_bundle(h, cid, "hello.wasm")
        opts = runtime_options(config_body="StandbySeconds = 30")
        address, version = await h.shim_start(cid, bundle, opts)
        try:
            async with connected(address, version) as t:
                await t.call("Create", pb.CreateTaskRequest(id=cid, bundle=str(bundle)), pb.CreateTaskResponse)
                waiter = asyncio.create_task(e.wait(t, cid))
                await e.start(t, cid)
                assert (await waiter).exit_status == 0
                await e.delete(t, cid)
                await e.shutdown(t, cid)
        finally:
            await h.shim_delete(cid, bundle)
        # no idle server lingers for 30 s: it exits after Shutdown as without the option
        await e.poll_until(lambda: not e.server_pids(h.root), 10, "the server to exit after Shutdown")
        log = h.log_files[-1].read_text()
        assert "StandbySeconds = 30 is deprecated and has no effect" in log, log

    e.run(legacy, body)
