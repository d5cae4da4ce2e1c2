"""asyncio ttrpc client for unary calls over a Unix stream socket.

One :class:`Client` is one connection. Calls are multiplexed: each gets the next odd stream id
(1, 3, 5, ...), its Request frame is written at once when the connection's single writer task
is idle (else queued to it), and the socket's readability callback resolves the call when the
Response for that id arrives, in whatever order the server answers. The client owns exactly one
background task (the runner, holding the reader and the writer in a TaskGroup);
:meth:`Client.close` cancels and awaits it.

Failure contract of :meth:`Client.call`:

- non-zero ``Response.status``: :class:`~runwasm.shim.ttrpc.status.RpcError` with that code and
  message (codes outside 0..16 become UNKNOWN);
- local timeout: RpcError DEADLINE_EXCEEDED "context deadline exceeded" (there is no cancel
  message in ttrpc; a late Response is logged and dropped);
- request or response over 4 MiB: RpcError RESOURCE_EXHAUSTED;
- connection closed or broken, before or during the call: :class:`ClientClosedError`, for every
  outstanding call at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping, Sequence
from types import TracebackType

from google.protobuf.message import DecodeError

from runwasm.shim.api.ttrpc import ttrpc_pb2
from runwasm.shim.ttrpc.frame import Decoder, Event, MessageType, Oversized, encode_frame, oversized_text
from runwasm.shim.ttrpc.sockio import send_now
from runwasm.shim.ttrpc.status import Code, RpcError

__all__ = ["Client", "ClientClosedError", "Metadata"]

log = logging.getLogger(__name__)

_RECV_SIZE = 256 * 1024

Metadata = Mapping[str, str | Sequence[str]]
"""Call metadata: one entry per value is sent, keys lower-cased (``containerd-namespace-ttrpc``)."""


class ClientClosedError(ConnectionError):
    """The connection is closed (by us or the peer); the call's outcome is unknown."""


class Client:
    """A ttrpc client connection. Create it with :meth:`connect` or :meth:`from_socket`."""

    def __init__(self, sock: socket.socket) -> None:
        """Wrap a connected socket; must run inside an event loop. Prefer :meth:`connect`."""
        sock.setblocking(False)
        self._sock = sock
        self._next_id = 1
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = False
        self._writer_idle = False  # the writer waits on an empty outbox: call() may write at once
        self._runner = asyncio.get_running_loop().create_task(self._run())

    @classmethod
    async def connect(cls, address: str) -> Client:
        """Connect to ``address``: a socket path, or ``unix://<path>``.

        Raises:
            OSError: the socket cannot be reached (e.g. FileNotFoundError, ConnectionRefusedError).
        """
        path = address.removeprefix("unix://")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> Client:
        """Use an already connected stream socket (e.g. one end of a socketpair); takes ownership."""
        return cls(sock)

    @property
    def closed(self) -> bool:
        """True once the connection is closed; every further call raises ClientClosedError."""
        return self._closed

    async def call(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - also sent on the wire as timeout_nano
        metadata: Metadata | None = None,
    ) -> bytes:
        """Call ``service``/``method`` with a serialized request; return the serialized reply.

        Args:
            timeout: seconds; sent as ``timeout_nano`` and enforced locally too. None: no deadline.
            metadata: sent as ``Request.metadata``.

        Raises:
            RpcError: the server answered a non-OK status, the deadline passed, or a message was
                larger than 4 MiB.
            ClientClosedError: the connection is or became closed.
        """
        if self._closed:
            raise ClientClosedError("ttrpc: closed")
        loop = asyncio.get_running_loop()
        request = ttrpc_pb2.Request(service=service, method=method, payload=payload)
        for key, values in (metadata or {}).items():
            for value in [values] if isinstance(values, str) else values:
                request.metadata.add(key=key.lower(), value=value)
        deadline = None
        if timeout is not None:
            if timeout <= 0:
                raise RpcError(Code.DEADLINE_EXCEEDED, "context deadline exceeded")
            deadline = loop.time() + timeout
            request.timeout_nano = max(1, int(timeout * 1e9))
        stream_id = self._next_id
        frame = encode_frame(stream_id, MessageType.REQUEST, request.SerializeToString())
        self._next_id += 2
        future: asyncio.Future[bytes] = loop.create_future()
        self._pending[stream_id] = future
        if self._writer_idle and self._outbox.empty():
            # the writer has nothing older: write now what the socket takes, instead of waking it
            frame = frame[send_now(self._sock, frame):]
        if frame:
            self._writer_idle = False
            self._outbox.put_nowait(frame)
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                return await future
        except TimeoutError:
            if scope.expired():
                raise RpcError(Code.DEADLINE_EXCEEDED, "context deadline exceeded") from None
            raise
        finally:
            self._pending.pop(stream_id, None)

    async def close(self) -> None:
        """Close the connection; outstanding calls fail with ClientClosedError. Idempotent."""
        self._closed = True
        self._runner.cancel()
        await asyncio.wait([self._runner])

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self) -> None:
        """Own the reader and writer; on any exit, fail every outstanding call and close."""
        try:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self._write_loop())
                await self._read_until_end()
                writer.cancel()
        except Exception:
            log.exception("ttrpc client: connection failed")
        finally:
            self._closed = True
            self._sock.close()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ClientClosedError("ttrpc: closed"))
            self._pending.clear()

    async def _read_until_end(self) -> None:
        """Read responses until EOF or a read error. The socket stays registered with the loop
        for the whole connection and each response resolves its call straight from the
        readability callback (``_on_readable``): no task step, future and selector update per
        read, as ``loop.sock_recv`` costs. Raises what the callback raised."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        decoder = Decoder()
        fd = self._sock.fileno()

        def on_readable() -> None:
            try:
                if self._on_readable(decoder) or ended.done():
                    return
                ended.set_result(None)
            except Exception as err:  # a bug here ends the connection, as it did the read loop
                if not ended.done():
                    ended.set_exception(err)
            loop.remove_reader(fd)

        loop.add_reader(fd, on_readable)
        try:
            await ended
        finally:
            loop.remove_reader(fd)

    def _on_readable(self, decoder: Decoder) -> bool:
        """Take what the socket has and resolve the calls it answers; False at EOF or error."""
        try:
            data = self._sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as err:
            log.info("ttrpc client: read failed: %s", err)
            return False
        if not data:
            return False
        decoder.feed(data)
        for event in decoder:
            self._on_event(event)
        return True

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._outbox.empty():
                self._writer_idle = True
            frame = await self._outbox.get()
            self._writer_idle = False
            try:
                await loop.sock_sendall(self._sock, frame)
            except OSError as err:
                log.info("ttrpc client: write failed: %s", err)
                # Wake the reader so the runner ends and fails every outstanding call.
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return

    def _on_event(self, event: Event) -> None:
        if event.type != MessageType.RESPONSE:
            log.debug("ttrpc client: ignored a frame of type %d on stream %d", event.type, event.stream_id)
            return
        future = self._pending.get(event.stream_id)
        if future is None or future.done():
            log.info("ttrpc client: dropped a response for inactive stream %d", event.stream_id)
            return
        if isinstance(event, Oversized):
            future.set_exception(RpcError(Code.RESOURCE_EXHAUSTED, oversized_text(event.length)))
            return
        try:
            response = ttrpc_pb2.Response.FromString(event.payload)
        except DecodeError as err:
            future.set_exception(RpcError(Code.INTERNAL, f"failed to decode ttrpc response: {err}"))
            return
        code = Code.from_wire(response.status.code)
        if code != Code.OK:
            future.set_exception(RpcError(code, str(response.status.message)))
        else:
            payload: bytes = response.payload
            future.set_result(payload)
