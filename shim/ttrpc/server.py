"""asyncio ttrpc server for unary methods over Unix stream sockets.

Task ownership (structured concurrency):

- :meth:`Server.serve` owns one :class:`asyncio.TaskGroup`: the accept loop and one task per
  accepted connection. It returns after :meth:`Server.close` once every connection has ended.
- Each connection owns a TaskGroup with its writer task and one task per in-flight request. The
  connection task itself reads. When reading ends (peer EOF or error, or :meth:`Server.close`),
  every in-flight handler task is cancelled and awaited, frames already queued are flushed (at
  most :data:`FLUSH_TIMEOUT` seconds), and the socket is closed.

Per request: the ``ttrpc.Request`` is decoded (INVALID_ARGUMENT when it cannot be), the handler
is looked up (UNIMPLEMENTED "service <name>" or "method <name>"), and the handler runs in its own
task under the ``timeout_nano`` deadline. Exactly one Response is queued per dispatched stream,
unless the connection closes first. All frames go through one queue drained by one writer, so
frames never interleave; responses go out in completion order.

Back-pressure, per connection: at most ``max_in_flight`` handlers run at once and at most
``max_queued_bytes`` of responses wait for the writer. When either bound is reached the
connection stops reading (already-received frames stay in the decoder, unparsed; the rest stays
in the kernel's socket buffers, which then fill and block the client), and resumes once a
handler finishes or the writer catches up. A peer that hangs up while reading is paused is
noticed at once (``EPOLLRDHUP``) and the connection ends, releasing all it held. The bounds
must exceed the long calls a client keeps open at once on one connection (containerd's
``Wait`` per task), or those calls would hold the connection paused.

Peers are checked with SO_PEERCRED at accept: a peer whose uid differs from our euid is logged
and disconnected before any byte is read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import select
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping

from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from runwasm.shim.api.ttrpc import ttrpc_pb2
from runwasm.shim.ttrpc.frame import Decoder, MessageType, OversizedMessageError, encode_frame
from runwasm.shim.ttrpc.sockio import send_now
from runwasm.shim.ttrpc.status import Code, RpcError
from runwasm.shim.ttrpc.streams import Dispatch, Reject, ServerStreams

__all__ = ["FLUSH_TIMEOUT", "MAX_IN_FLIGHT", "MAX_QUEUED_BYTES", "ConnectionStats", "Handler", "Peer",
           "RequestContext", "Server"]

log = logging.getLogger(__name__)

FLUSH_TIMEOUT = 1.0
"""Seconds a closing connection waits for already-queued response frames to be written."""

MAX_IN_FLIGHT = 1024
"""Default bound on the handlers running at once for one connection."""

MAX_QUEUED_BYTES = 4 * 1024 * 1024
"""Default bound on the response bytes one connection queues for its writer."""

_RECV_SIZE = 256 * 1024
_UCRED = struct.Struct("3i")


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """Credentials of a connected client, from SO_PEERCRED at connect time."""

    pid: int
    uid: int
    gid: int


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionStats:
    """A snapshot of one open connection (see :meth:`Server.connection_stats`).

    Attributes:
        peer: the client.
        requests: request frames taken off the wire so far (dispatched or rejected).
        in_flight: handlers running now.
        queued_bytes: response bytes waiting for the writer.
        paused: True while reading is stopped because a bound is reached.
    """

    peer: Peer
    requests: int
    in_flight: int
    queued_bytes: int
    paused: bool


@dataclasses.dataclass(frozen=True, slots=True)
class RequestContext:
    """What a handler knows about its call.

    Attributes:
        service: full service name, e.g. ``"containerd.task.v3.Task"``.
        method: method name, e.g. ``"Create"``.
        metadata: ``Request.metadata`` with lower-cased keys, values in wire order.
        deadline: ``loop.time()`` at which the call times out (from ``timeout_nano``), or None.
            The server cancels the handler at that time and answers DEADLINE_EXCEEDED.
        peer_pid: pid of the connected client (SO_PEERCRED).
        peer_uid: uid of the connected client (SO_PEERCRED).
    """

    service: str
    method: str
    metadata: dict[str, list[str]]
    deadline: float | None
    peer_pid: int
    peer_uid: int


Handler = Callable[[bytes, RequestContext], Awaitable[bytes]]
"""``async def handler(payload, ctx) -> bytes``: serialized request in, serialized reply out.

Raise :class:`~runwasm.shim.ttrpc.status.RpcError` to answer with its code and message; any other
exception answers UNKNOWN with ``str(exc)`` and is logged with its traceback.
"""


class Server:
    """Serve ``handlers`` (keyed by ``(service, method)``) on a listening Unix socket.

    Args:
        handlers: the methods; the mapping is copied.
        on_connection_closed: called with the peer after each accepted connection has fully
            ended (handlers cancelled, socket closed). Exceptions from it are logged.
        max_in_flight: per connection, handlers running at once before reading stops.
        max_queued_bytes: per connection, response bytes queued before reading stops.
    """

    def __init__(
        self,
        handlers: Mapping[tuple[str, str], Handler],
        *,
        on_connection_closed: Callable[[Peer], None] | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        if max_in_flight < 1 or max_queued_bytes < 1:
            raise ValueError(f"ttrpc server: bounds must be positive, got max_in_flight={max_in_flight}, "
                             f"max_queued_bytes={max_queued_bytes}")
        self.max_in_flight = max_in_flight
        self.max_queued_bytes = max_queued_bytes
        self._handlers = dict(handlers)
        self._services = {service for service, _ in self._handlers}
        self._on_connection_closed = on_connection_closed
        self._connections: set[_Connection] = set()
        self._serving = False
        self._closing = asyncio.Event()
        self._closed = asyncio.Event()

    @property
    def connections(self) -> int:
        """Number of connections currently open."""
        return len(self._connections)

    def connection_stats(self) -> list[ConnectionStats]:
        """A snapshot of every open connection."""
        return [conn.stats() for conn in self._connections]

    async def serve(self, listener: socket.socket) -> None:
        """Accept and serve connections until :meth:`close`; then return once all have ended.

        ``listener`` must be a bound, listening ``AF_UNIX``/``SOCK_STREAM`` socket (an inherited
        fd is fine). It is switched to non-blocking mode and is not closed: its owner closes it.

        Raises:
            RuntimeError: serve() was already called on this server.
        """
        if self._serving:
            raise RuntimeError("ttrpc server: serve() may only be called once")
        self._serving = True
        listener.setblocking(False)
        try:
            async with asyncio.TaskGroup() as tg:
                accept = tg.create_task(self._accept_loop(listener, tg))
                await self._closing.wait()
                accept.cancel()
                for conn in list(self._connections):
                    conn.stop_reading()
        finally:
            self._closed.set()

    def close(self) -> None:
        """Stop accepting and end every connection (in-flight handlers are cancelled).

        Idempotent and non-blocking; use :meth:`wait_closed` to wait for the end. A handler that
        wants its own response delivered before the server stops should defer the call, e.g.
        ``asyncio.get_running_loop().call_soon(server.close)``: queued frames are flushed.
        """
        self._closing.set()
        if not self._serving:
            self._closed.set()
        for conn in list(self._connections):
            conn.stop_reading()

    async def wait_closed(self) -> None:
        """Wait until :meth:`serve` has returned (immediately if it never ran and close() was called)."""
        await self._closed.wait()

    async def _accept_loop(self, listener: socket.socket, tg: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except (ConnectionAbortedError, InterruptedError):
                continue
            except OSError as err:
                if err.errno in (errno.EBADF, errno.EINVAL, errno.ENOTSOCK):
                    log.error("ttrpc server: stopped accepting on fd %d: %s", listener.fileno(), err)
                    return
                log.error("ttrpc server: failed to accept a connection: %s", err)
                await asyncio.sleep(0.1)  # EMFILE and friends: back off instead of spinning
                continue
            if self._closing.is_set():
                sock.close()
                return
            self._start_connection(sock, tg)
            del sock  # this loop must not keep the last connection alive after it ends

    def _start_connection(self, sock: socket.socket, tg: asyncio.TaskGroup) -> None:
        peer = _check_peer(sock)
        if peer is None:
            sock.close()
            return
        sock.setblocking(False)
        conn = _Connection(self, sock, peer)
        self._connections.add(conn)
        tg.create_task(self._run_connection(conn))

    async def _run_connection(self, conn: _Connection) -> None:
        try:
            await conn.run()
        except Exception:
            log.exception("ttrpc server: connection from pid %d failed", conn.peer.pid)
        finally:
            conn.sock.close()
            self._connections.discard(conn)
            if self._on_connection_closed is not None:
                try:
                    self._on_connection_closed(conn.peer)
                except Exception:
                    log.exception("ttrpc server: on_connection_closed callback failed")

    def _lookup(self, service: str, method: str) -> Handler:
        handler = self._handlers.get((service, method))
        if handler is not None:
            return handler
        if service not in self._services:
            raise RpcError(Code.UNIMPLEMENTED, f"service {service}")
        raise RpcError(Code.UNIMPLEMENTED, f"method {method}")


# what ``_Connection._take_frames`` leaves the read loop with
_MORE = 1  # the decoder needs more bytes
_FULL = 2  # a bound is reached: wait for room before taking more
_STOP = 3  # the connection ends


def _check_peer(sock: socket.socket) -> Peer | None:
    """Return the peer's credentials, or None (logged) when it must be disconnected."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError as err:
        log.warning("ttrpc server: dropped a connection: failed to read SO_PEERCRED: %s", err)
        return None
    peer = Peer(*_UCRED.unpack(raw))
    if peer.uid != os.geteuid():
        log.warning(
            "ttrpc server: dropped a connection from pid %d: peer uid %d, expected %d",
            peer.pid, peer.uid, os.geteuid(),
        )
        return None
    return peer


class _Connection:
    """One accepted connection: a read loop, a writer task and the in-flight handler tasks."""

    def __init__(self, server: Server, sock: socket.socket, peer: Peer) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self._streams = ServerStreams()
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._queued_bytes = 0
        self._requests = 0
        self._paused = False
        self._writer_failed = False
        self._shut_pending = False  # stop_reading waits for the queued responses to be sent
        self._writer_idle = False  # the writer waits on an empty outbox: _send may write at once
        self._wake = asyncio.Event()  # a handler finished, the writer progressed, or it failed

    def stats(self) -> ConnectionStats:
        return ConnectionStats(self.peer, self._requests, len(self._calls), self._queued_bytes, self._paused)

    def _full(self) -> bool:
        return (len(self._calls) >= self.server.max_in_flight
                or self._queued_bytes >= self.server.max_queued_bytes)

    def stop_reading(self) -> None:
        """Make the read loop see EOF, which starts the orderly close of this connection; once
        the responses already queued are sent (at most ``FLUSH_TIMEOUT``). On a Unix socket our
        SHUT_RD is the peer's SEND_SHUTDOWN: a Go client that sends anything after it gets EPIPE,
        closes the connection and fails its pending calls, so a response queued just before
        (a handler that closes the server: Shutdown, ShutdownSandbox) would never be read."""
        if self._queued_bytes > 0 and not self._writer_failed:
            if not self._shut_pending:
                self._shut_pending = True
                asyncio.get_running_loop().call_later(FLUSH_TIMEOUT, self._shut_read)
            return
        self._shut_read()

    def _shut_read(self) -> None:
        self._shut_pending = False
        if self.sock.fileno() < 0:
            return
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError as err:
            log.debug("ttrpc server: shutdown of a connection failed: %s", err)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(self._write_loop())
            await self._read_loop(tg)
            calls = list(self._calls.values())
            for task in calls:
                task.cancel()
            if calls:
                await asyncio.wait(calls)
            self._outbox.put_nowait(None)
            try:
                async with asyncio.timeout(FLUSH_TIMEOUT):
                    await writer
            except TimeoutError:
                log.warning("ttrpc server: dropped unsent responses to pid %d", self.peer.pid)

    async def _read_loop(self, tg: asyncio.TaskGroup) -> None:
        """Read and dispatch requests until EOF, a read error or a failed writer. While the
        bounds allow, the socket stays registered with the loop and each read is handled in its
        readability callback (``_on_readable``): no task step, future and selector update per
        read, as ``loop.sock_recv`` costs; this task only waits, for room (``_until_room``) or
        for the end."""
        loop = asyncio.get_running_loop()
        decoder = Decoder()
        fd = self.sock.fileno()
        while True:
            taken = self._take_frames(decoder, tg)
            if taken == _STOP:
                return
            if taken == _FULL:
                if not await self._until_room():
                    return
                continue
            attention: asyncio.Future[int] = loop.create_future()

            def on_readable(attention: asyncio.Future[int] = attention) -> None:
                try:
                    outcome = self._on_readable(decoder, tg)
                except Exception as err:  # a bug here ends the connection, as it did the read loop
                    outcome = _STOP
                    if not attention.done():
                        attention.set_exception(err)
                if outcome == _MORE:
                    return
                loop.remove_reader(fd)
                if not attention.done():
                    attention.set_result(outcome)

            loop.add_reader(fd, on_readable)
            try:
                taken = await attention
            finally:
                loop.remove_reader(fd)
            if taken == _STOP:
                return
            # FULL: the loop above waits for room, then goes on reading

    def _on_readable(self, decoder: Decoder, tg: asyncio.TaskGroup) -> int:
        """Take what the socket has and dispatch the requests the bounds allow; STOP at EOF or
        a read error."""
        try:
            data = self.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return _MORE
        except OSError as err:
            log.info("ttrpc server: read from pid %d failed: %s", self.peer.pid, err)
            return _STOP
        if not data:
            if not decoder.at_boundary:
                log.info("ttrpc server: pid %d closed the connection mid-frame", self.peer.pid)
            return _STOP
        decoder.feed(data)
        return self._take_frames(decoder, tg)

    def _take_frames(self, decoder: Decoder, tg: asyncio.TaskGroup) -> int:
        """Take frames off the decoder while the bounds allow: MORE when it needs more bytes,
        FULL when a bound is reached, STOP when the writer failed."""
        while True:
            if self._writer_failed:
                return _STOP
            if self._full():
                return _FULL
            event = decoder.next_event()
            if event is None:
                return _MORE
            self._requests += 1
            verdict = self._streams.classify(event)
            if isinstance(verdict, Reject):
                self._send(verdict.stream_id, verdict.code, verdict.message)
            elif isinstance(verdict, Dispatch):
                self._dispatch(verdict, tg)

    async def _until_room(self) -> bool:
        """Wait, not reading, until a bound frees up; False when the connection must end (the
        peer hung up, the writer failed, or :meth:`stop_reading` was called)."""
        loop = asyncio.get_running_loop()
        # EPOLLRDHUP reports the peer's hang-up (and our own SHUT_RD) even while unread data
        # is queued, which plain readability cannot tell apart from more requests
        hangup = select.epoll(1)
        self._paused = True
        try:
            hangup.register(self.sock.fileno(), select.EPOLLRDHUP)
            loop.add_reader(hangup.fileno(), self._wake.set)
            try:
                while self._full():
                    if self._writer_failed or hangup.poll(0):
                        log.info("ttrpc server: pid %d hung up with %d calls in flight and %d response bytes "
                                 "unsent", self.peer.pid, len(self._calls), self._queued_bytes)
                        return False
                    self._wake.clear()
                    await self._wake.wait()
                return True
            finally:
                loop.remove_reader(hangup.fileno())
        finally:
            self._paused = False
            hangup.close()

    def _dispatch(self, dispatch: Dispatch, tg: asyncio.TaskGroup) -> None:
        stream_id = dispatch.stream_id
        try:
            request = ttrpc_pb2.Request.FromString(dispatch.payload)
        except DecodeError as err:
            self._finish(stream_id, Code.INVALID_ARGUMENT, f"failed to decode ttrpc request: {err}")
            return
        service: str = request.service
        method: str = request.method
        try:
            handler = self.server._lookup(service, method)
        except RpcError as err:
            self._finish(stream_id, err.code, err.message)
            return
        metadata: dict[str, list[str]] = {}
        for kv in request.metadata:
            metadata.setdefault(str(kv.key).lower(), []).append(str(kv.value))
        timeout_nano: int = request.timeout_nano
        deadline = None
        if timeout_nano > 0:
            deadline = asyncio.get_running_loop().time() + timeout_nano / 1e9
        ctx = RequestContext(service, method, metadata, deadline, self.peer.pid, self.peer.uid)
        payload: bytes = request.payload
        self._calls[stream_id] = tg.create_task(self._call(stream_id, handler, payload, ctx))

    async def _call(self, stream_id: int, handler: Handler, payload: bytes, ctx: RequestContext) -> None:
        scope = asyncio.timeout_at(ctx.deadline)
        try:
            async with scope:
                reply = await handler(payload, ctx)
        except RpcError as err:
            self._finish(stream_id, err.code, err.message)
        except TimeoutError as err:
            if scope.expired():
                self._finish(stream_id, Code.DEADLINE_EXCEEDED, "context deadline exceeded")
            else:
                self._fail(stream_id, ctx, err)
        except Exception as err:
            self._fail(stream_id, ctx, err)
        else:
            if isinstance(reply, bytes):
                self._finish(stream_id, Code.OK, "", reply)
            else:  # a handler bug must not take the connection down
                self._fail(stream_id, ctx, TypeError(f"handler returned {type(reply).__name__}, expected bytes"))
        finally:
            self._calls.pop(stream_id, None)
            self._streams.finish(stream_id)
            self._wake.set()

    def _fail(self, stream_id: int, ctx: RequestContext, err: Exception) -> None:
        log.error("ttrpc server: %s/%s failed", ctx.service, ctx.method, exc_info=err)
        self._finish(stream_id, Code.UNKNOWN, str(err) or type(err).__name__)

    def _finish(self, stream_id: int, code: Code, message: str, payload: bytes = b"") -> None:
        self._streams.finish(stream_id)
        self._send(stream_id, code, message, payload)

    def _send(self, stream_id: int, code: Code, message: str, payload: bytes = b"") -> None:
        """Queue the Response for ``stream_id``; an oversized reply becomes RESOURCE_EXHAUSTED."""
        response = ttrpc_pb2.Response(status=status_pb2.Status(code=code, message=message), payload=payload)
        response.status.SetInParent()  # Go sends `0a 00` for OK; keep the status present
        try:
            frame = encode_frame(stream_id, MessageType.RESPONSE, response.SerializeToString())
        except OversizedMessageError as err:
            log.error("ttrpc server: reply on stream %d not sent: %s", stream_id, err)
            self._send(stream_id, err.code, err.message)
            return
        if self._writer_idle and not self._writer_failed and self._outbox.empty():
            # nothing queued or being sent: write now, as far as the socket takes it, instead of
            # waking the writer task (one loop iteration per response; order is kept, since the
            # writer has nothing older). What the socket does not take goes to the writer.
            frame = frame[send_now(self.sock, frame):]
            if not frame:
                return
        self._queued_bytes += len(frame)
        self._writer_idle = False
        self._outbox.put_nowait(frame)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._outbox.empty():
                self._writer_idle = True
            frame = await self._outbox.get()
            self._writer_idle = False
            if frame is None:
                return
            try:
                await loop.sock_sendall(self.sock, frame)
            except OSError as err:
                log.info("ttrpc server: write to pid %d failed: %s", self.peer.pid, err)
                self._writer_failed = True
                self._drop_queued()
                self.stop_reading()
                return
            finally:
                self._queued_bytes -= len(frame)
                self._wake.set()
            if self._shut_pending and self._queued_bytes <= 0:
                self._shut_read()

    def _drop_queued(self) -> None:
        """The peer is gone: free the responses nobody will read."""
        while not self._outbox.empty():
            frame = self._outbox.get_nowait()
            if frame is not None:
                self._queued_bytes -= len(frame)
