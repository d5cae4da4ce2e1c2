"""GroupServer (shim/server/group.py): what runs off the event loop keeps the group's context."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runwasm.shim.server import group_logs, image_module
from runwasm.shim.server.group import GroupServer


def test_image_module_fetch_logs_to_its_own_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's module is fetched in a worker thread; its log records (the content-store cache's
    "loaded"/"compiled" lines) must reach the group's own log FIFO, not the node server's fallback
    (another pod's FIFO, whose reader containerd closes when that pod is deleted: lines were lost)."""
    grpc = tmp_path / "containerd.sock"
    grpc.touch()
    seen: list[str] = []

    def fake_fetch(*_args: Any) -> None:
        seen.append(group_logs.current.get())
        logging.getLogger("runwasm.test.group").info("fetched in the worker")

    monkeypatch.setattr(image_module, "fetch_image_module", fake_fetch)
    router = group_logs.GroupLogRouter("", "ns", "-")
    fallback_r, fallback_w = os.pipe()
    own_r, own_w = os.pipe()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    root.handlers[:] = [router]
    root.setLevel(logging.INFO)
    router.fallback.setLevel(logging.INFO)
    saved_fd2 = os.dup(2)
    os.dup2(fallback_w, 2)
    try:
        router.add("pod-b", own_w, "ns", "b")
        fake_self = SimpleNamespace(settings=SimpleNamespace(grpc_address=f"unix://{grpc}", namespace="ns"))
        spec = SimpleNamespace(annotations={})
        opts = SimpleNamespace(wasm_sandbox=None, wasm_cache_dir=str(tmp_path / "cache"))

        async def create_in_group() -> None:
            group_logs.current.set("pod-b")  # as node.serve_group sets it for every task of the group
            await GroupServer._image_modules(fake_self, "cid", tmp_path, spec, opts)  # type: ignore[arg-type]

        asyncio.run(create_in_group())
        os.set_blocking(own_r, False)
        os.set_blocking(fallback_r, False)
        own = os.read(own_r, 65536).decode()
        try:
            fallback = os.read(fallback_r, 65536).decode()
        except BlockingIOError:
            fallback = ""
    finally:
        os.dup2(saved_fd2, 2)
        os.close(saved_fd2)
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for fd in (fallback_r, fallback_w, own_r, own_w):
            os.close(fd)
    assert seen == ["pod-b"]
    assert "fetched in the worker" in own
    assert "id=b" in own
    assert "fetched in the worker" not in fallback


def test_shutdown_sandbox_ends_the_server_once_containerd_disconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    """ShutdownSandbox does not end the server while containerd's connection is open (its reply
    and the close arriving together made containerd's ttrpc client fail the call: "ttrpc: closed",
    RemovePodSandbox failed); the last connection's close ends it, or else the grace timer."""
    from runwasm.shim.server import group

    calls: list[str] = []

    async def main() -> None:
        fake = SimpleNamespace(_sandbox_shut_down=False, server=SimpleNamespace(connections=1),
                               shutdown=lambda: calls.append("shutdown"))
        GroupServer._connection_closed(fake, None)  # type: ignore[arg-type]
        assert calls == []  # a closed connection alone (containerd restarting) is no reason to exit
        GroupServer._shutdown_after_sandbox(fake)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert calls == []  # the connection that sent ShutdownSandbox is still open
        fake.server.connections = 0
        GroupServer._connection_closed(fake, None)  # type: ignore[arg-type]
        assert calls == ["shutdown"]

        monkeypatch.setattr(group, "SANDBOX_SHUTDOWN_GRACE", 0.01)
        calls.clear()
        other = SimpleNamespace(_sandbox_shut_down=False, server=SimpleNamespace(connections=1),
                                shutdown=lambda: calls.append("shutdown"))
        GroupServer._shutdown_after_sandbox(other)  # type: ignore[arg-type]
        await asyncio.sleep(0.2)
        assert calls == ["shutdown"]  # containerd never disconnected: the grace timer ends it

    asyncio.run(main())
