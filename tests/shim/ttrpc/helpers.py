"""Test helpers: a real server on a Unix socket in a temp dir, and a raw frame-level peer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from google.rpc import status_pb2

from runwasm.shim.api.ttrpc import ttrpc_pb2
from runwasm.shim.ttrpc.frame import Decoder, Event, Frame, MessageType, encode_frame
from runwasm.shim.ttrpc.server import Handler, Server

T = TypeVar("T")
TIMEOUT = 10.0


def run(coro: Awaitable[T]) -> T:
    """Run one test coroutine on a fresh loop, failing it after TIMEOUT seconds."""

    async def bounded() -> T:
        async with asyncio.timeout(TIMEOUT):
            return await coro

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def serving(
    handlers: Mapping[tuple[str, str], Handler], *, address: str | None = None, **kwargs: Any
) -> AsyncIterator[tuple[Server, str]]:
    """Serve ``handlers`` on a fresh socket (a temp-dir path unless ``address`` is given)."""
    tmp = tempfile.mkdtemp(prefix="ttrpc-")
    path = address if address is not None else os.path.join(tmp, "s.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    server = Server(handlers, **kwargs)
    task = asyncio.get_running_loop().create_task(server.serve(listener))
    try:
        yield server, path
    finally:
        server.close()
        await server.wait_closed()
        await task  # re-raises anything serve() raised
        listener.close()
        shutil.rmtree(tmp)


class RawPeer:
    """A client that speaks frames, not calls, to test the server's protocol handling."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = Decoder()
        self.events: list[Event] = []

    @classmethod
    async def connect(cls, path: str) -> RawPeer:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, path)
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def request(
        self, stream_id: int, service: str, method: str, payload: bytes = b"", timeout_nano: int = 0
    ) -> None:
        message = ttrpc_pb2.Request(service=service, method=method, payload=payload, timeout_nano=timeout_nano)
        await self.send(encode_frame(stream_id, MessageType.REQUEST, message.SerializeToString()))

    async def next_event(self) -> Event | None:
        """The next frame from the server, or None at EOF."""
        while not self.events:
            data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
            if not data:
                return None
            self.decoder.feed(data)
            self.events += list(self.decoder)
        return self.events.pop(0)

    async def response(self) -> tuple[int, Any]:
        """The next frame, which must be a Response: (stream id, decoded ttrpc.Response)."""
        event = await self.next_event()
        assert isinstance(event, Frame), event
        assert event.type == MessageType.RESPONSE
        return event.stream_id, ttrpc_pb2.Response.FromString(event.payload)

    def close(self) -> None:
        self.sock.close()


def status_of(response: Any) -> tuple[int, str]:
    status: status_pb2.Status = response.status
    return status.code, status.message


def handler_of(fn: Callable[[bytes], Awaitable[bytes]]) -> Handler:
    """Adapt a payload-only coroutine function to the Handler signature."""

    async def handler(payload: bytes, ctx: object) -> bytes:
        return await fn(payload)

    return handler
