"""After a shim server is SIGKILLed, ``delete`` cleans up what it left, including the group's
socket, but never the socket of a server that is still serving the group."""

from __future__ import annotations

import os
import signal
import stat

from runwasm.shim.harness.driver import Harness
from tests.shim.e2e import helpers as e
from tests.shim.e2e.helpers import GROUP_ANNOTATION, run


def test_delete_removes_the_socket_of_a_killed_server_only(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        group = {GROUP_ANNOTATION: "crash-group"}
        b1 = e.make_bundle(h, "crash1", "sleep.wasm", annotations=group)
        b2 = e.make_bundle(h, "crash2", "hello.wasm", annotations=group)
        address, version = await h.shim_start("crash1", b1)
        assert await h.shim_start("crash2", b2) == (address, version)  # one server for the group
        path = address.removeprefix("unix://")
        async with e.connected(address, version) as t:
            pid = await e.create(t, "crash1", b1)
            await e.start(t, "crash1")
            await h.shim_delete("crash2", b2)  # another container of the group: server alive
            assert stat.S_ISSOCK(os.lstat(path).st_mode)
            assert (await e.state(t, "crash1")).pid == pid  # and still serving
        servers = e.server_pids(h.root)
        assert servers
        for server in servers:  # the server and its zygote, found by this harness's directory
            os.kill(server, signal.SIGKILL)
        await e.poll_until(lambda: not e.server_pids(h.root), 10, "the killed server to be gone")
        assert stat.S_ISSOCK(os.lstat(path).st_mode)  # left behind by the crash
        await h.shim_delete("crash1", b1)
        assert not os.path.lexists(path)
        await e.poll_until(lambda: not os.path.exists(f"/proc/{pid}"), 10, "the workload to be killed")

    run(legacy, body)
