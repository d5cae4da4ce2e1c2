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


def test_the_sandbox_api_is_served_by_handlers_built_at_its_first_request() -> None:
    """The Task-API pod's server never imports the Sandbox service; the lazy table names every
    method of the Sandbox service and builds the real handlers once, at the first request."""
    from runwasm.shim.api.runtime.sandbox.v1 import sandbox_pb2
    from runwasm.shim.server import group, sandbox_rpc

    assert group.SANDBOX_SERVICE == sandbox_rpc.SERVICE
    assert group.SANDBOX_METHODS == tuple(m.name for m in sandbox_pb2.DESCRIPTOR.services_by_name["Sandbox"].methods)
    builds: list[str] = []

    def build() -> dict[tuple[str, str], Any]:
        builds.append("built")

        def real(method: str) -> Any:
            async def handle(payload: bytes, _ctx: Any) -> bytes:
                return method.encode() + b":" + payload

            return handle

        return {(group.SANDBOX_SERVICE, m): real(m) for m in group.SANDBOX_METHODS}

    table = group._lazy_sandbox_handlers(build)
    assert sorted(table) == sorted((group.SANDBOX_SERVICE, m) for m in group.SANDBOX_METHODS)
    assert builds == []

    async def calls() -> list[bytes]:
        return [await table[(group.SANDBOX_SERVICE, "CreateSandbox")](b"a", None),  # type: ignore[arg-type]
                await table[(group.SANDBOX_SERVICE, "PingSandbox")](b"b", None)]  # type: ignore[arg-type]

    assert asyncio.run(calls()) == [b"CreateSandbox:a", b"PingSandbox:b"]
    assert builds == ["built"]


def test_a_task_api_pod_does_not_import_the_sandbox_service(tmp_path: Path) -> None:
    """A group's server is built without the Sandbox service (it is built at the first Sandbox
    request); Task requests do not build it."""
    import subprocess
    import sys

    code = f"""
import socket, sys
from types import SimpleNamespace
from runwasm.shim.common.options import RuntimeOptions
from runwasm.shim.entry.bootstrap import Settings
from runwasm.shim.server.group import GroupServer

settings = Settings("legacy", "ns", "cid", {str(tmp_path)!r}, "", "", "", "", False, "", None)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind({str(tmp_path / "s.sock")!r})
listener.listen()
server = GroupServer(settings, {str(tmp_path / "s.sock")!r}, listener, SimpleNamespace(pid=1), SimpleNamespace(),
                     RuntimeOptions())
assert ("containerd.runtime.sandbox.v1.Sandbox", "CreateSandbox") in server.server._handlers
assert ("containerd.task.v3.Task", "Create") in server.server._handlers
loaded = [m for m in sys.modules if m.startswith("runwasm.shim.server.sandbox")]
assert not loaded, loaded
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
