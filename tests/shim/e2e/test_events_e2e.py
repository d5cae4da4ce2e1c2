"""Events survive containerd being away: the publisher reconnects and delivers, in order."""

from __future__ import annotations

import asyncio
import signal

from runwasm.shim.harness.driver import Harness
from tests.shim.e2e import helpers as e


def test_exit_while_containerd_is_down_is_delivered_after_it_returns(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        b = e.make_bundle(h, "ev1", "spin.wasm")
        async with e.shim(h, "ev1", b) as t:
            io = e.stdio(h, "ev1")
            await e.create(t, "ev1", b, io)
            await e.start(t, "ev1")
            await h.events.wait_for("/tasks/start", "ev1")
            await h.stop_events()  # containerd "stops": its ttrpc socket is gone
            await e.kill(t, "ev1", signal.SIGKILL)
            assert (await e.wait(t, "ev1")).exit_status == 137
            await asyncio.sleep(0.5)  # the publisher fails, backs off and retries meanwhile
            assert "/tasks/exit" not in h.events.topics("ev1")
            h.start_events()  # containerd is back on the same socket path
            await h.events.wait_for("/tasks/exit", "ev1", timeout=10)
            await io.finish()
            await e.delete(t, "ev1")
            await h.events.wait_for("/tasks/delete", "ev1", timeout=10)
            await e.shutdown(t, "ev1")
        assert h.events.topics("ev1") == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]

    e.run(legacy, body)
