"""The asyncio server over a real Unix socket, driven by the Client and by a raw frame peer."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import textwrap
import uuid

import pytest

from runwasm.shim.ttrpc.client import Client, ClientClosedError
from runwasm.shim.ttrpc.frame import MAX_MESSAGE, MessageType, encode_frame
from runwasm.shim.ttrpc.server import Handler, Peer, RequestContext, Server
from runwasm.shim.ttrpc.status import Code, RpcError

from .helpers import RawPeer, handler_of, run, serving, status_of

SVC = "test.v1.Echo"


async def _echo(payload: bytes) -> bytes:
    return payload


ECHO: dict[tuple[str, str], Handler] = {(SVC, "Echo"): handler_of(_echo)}


def test_success_response_carries_ok_status_and_payload() -> None:
    async def main() -> None:
        async with serving(ECHO) as (_, path):
            peer = await RawPeer.connect(path)
            await peer.request(1, SVC, "Echo", b"hello")
            stream_id, response = await peer.response()
            assert stream_id == 1
            assert response.HasField("status")  # `0a 00`, like Go
            assert status_of(response) == (0, "")
            assert response.payload == b"hello"
            peer.close()

    run(main())


def test_slow_handler_does_not_block_fast_one() -> None:
    async def main() -> None:
        fast_done = asyncio.Event()
        order: list[str] = []

        async def slow(payload: bytes) -> bytes:
            await fast_done.wait()  # finishes only after the later call has been answered
            order.append("slow")
            return b"slow"

        async def fast(payload: bytes) -> bytes:
            order.append("fast")
            return b"fast"

        handlers = {(SVC, "Wait"): handler_of(slow), (SVC, "State"): handler_of(fast)}
        async with serving(handlers) as (_, path), await Client.connect(path) as client:
            wait = asyncio.create_task(client.call(SVC, "Wait", b""))
            await asyncio.sleep(0.05)
            assert await client.call(SVC, "State", b"") == b"fast"
            assert not wait.done()
            fast_done.set()
            assert await wait == b"slow"
            assert order == ["fast", "slow"]

    run(main())


def test_many_concurrent_calls_are_multiplexed() -> None:
    async def main() -> None:
        async def delayed(payload: bytes) -> bytes:
            await asyncio.sleep(int(payload) % 5 / 100)
            return payload

        async with serving({(SVC, "D"): handler_of(delayed)}) as (_, path), await Client.connect(path) as client:
            payloads = [str(i).encode() for i in range(50)]
            replies = await asyncio.gather(*(client.call(SVC, "D", p) for p in payloads))
            assert replies == payloads

    run(main())


@pytest.mark.parametrize(
    ("service", "method", "message"),
    [("nope.v1.Svc", "Echo", "service nope.v1.Svc"), (SVC, "Nope", "method Nope")],
)
def test_unknown_service_or_method_is_unimplemented(service: str, method: str, message: str) -> None:
    async def main() -> None:
        async with serving(ECHO) as (_, path), await Client.connect(path) as client:
            with pytest.raises(RpcError) as info:
                await client.call(service, method, b"")
            assert (info.value.code, str(info.value)) == (Code.UNIMPLEMENTED, message)

    run(main())


def test_undecodable_request_is_invalid_argument() -> None:
    async def main() -> None:
        async with serving(ECHO) as (_, path):
            peer = await RawPeer.connect(path)
            await peer.send(encode_frame(1, MessageType.REQUEST, b"\xff\xff\xff"))
            stream_id, response = await peer.response()
            code, message = status_of(response)
            assert (stream_id, code) == (1, Code.INVALID_ARGUMENT)
            assert message.startswith("failed to decode ttrpc request")
            await peer.request(3, SVC, "Echo", b"still alive")
            assert (await peer.response())[1].payload == b"still alive"
            peer.close()

    run(main())


def test_handler_rpc_error_keeps_code_and_message() -> None:
    async def main() -> None:
        async def missing(payload: bytes) -> bytes:
            raise RpcError(Code.NOT_FOUND, "container not created: not found")

        async with serving({(SVC, "Get"): handler_of(missing)}) as (_, path), await Client.connect(path) as client:
            with pytest.raises(RpcError) as info:
                await client.call(SVC, "Get", b"")
            assert (info.value.code, info.value.message) == (Code.NOT_FOUND, "container not created: not found")

    run(main())


def test_handler_exception_is_unknown_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async def broken(payload: bytes) -> bytes:
            raise KeyError("boom")

        async with serving({(SVC, "Bad"): handler_of(broken)}) as (_, path), await Client.connect(path) as client:
            with pytest.raises(RpcError) as info:
                await client.call(SVC, "Bad", b"")
            assert (info.value.code, str(info.value)) == (Code.UNKNOWN, "'boom'")
            # The connection survives a failed handler.
            with pytest.raises(RpcError, match="method Other"):
                await client.call(SVC, "Other", b"")

    with caplog.at_level(logging.ERROR, logger="runwasm.shim.ttrpc.server"):
        run(main())
    (record,) = [r for r in caplog.records if r.exc_info]
    assert f"{SVC}/Bad" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], KeyError)


def test_handler_returning_non_bytes_is_unknown() -> None:
    async def main() -> None:
        async def wrong(payload: bytes, ctx: RequestContext) -> bytes:
            return None  # type: ignore[return-value]

        async with serving({(SVC, "Wrong"): wrong}) as (_, path), await Client.connect(path) as client:
            with pytest.raises(RpcError) as info:
                await client.call(SVC, "Wrong", b"")
            assert (info.value.code, str(info.value)) == (Code.UNKNOWN, "handler returned NoneType, expected bytes")
            with pytest.raises(RpcError, match="method Other"):
                await client.call(SVC, "Other", b"")

    run(main())


def test_deadline_from_timeout_nano_cancels_handler() -> None:
    async def main() -> None:
        cancelled = asyncio.Event()
        seen: list[RequestContext] = []

        async def hang(payload: bytes, ctx: RequestContext) -> bytes:
            seen.append(ctx)
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return b""

        async with serving({(SVC, "Hang"): hang}) as (_, path):
            peer = await RawPeer.connect(path)
            loop = asyncio.get_running_loop()
            start = loop.time()
            await peer.request(1, SVC, "Hang", timeout_nano=100_000_000)
            stream_id, response = await peer.response()
            elapsed = loop.time() - start
            assert (stream_id, status_of(response)) == (1, (Code.DEADLINE_EXCEEDED, "context deadline exceeded"))
            assert 0.09 <= elapsed < 2
            assert cancelled.is_set()
            deadline = seen[0].deadline
            assert deadline is not None
            assert start < deadline <= start + 0.2
            peer.close()

    run(main())


def test_no_timeout_means_no_deadline() -> None:
    async def main() -> None:
        seen: list[RequestContext] = []

        async def record(payload: bytes, ctx: RequestContext) -> bytes:
            seen.append(ctx)
            return b""

        async with serving({(SVC, "R"): record}) as (_, path), await Client.connect(path) as client:
            await client.call(SVC, "R", b"")
            await client.call(SVC, "R", b"", timeout=30)
        assert seen[0].deadline is None
        assert seen[1].deadline is not None

    run(main())


def test_context_metadata_and_peer() -> None:
    async def main() -> None:
        seen: list[RequestContext] = []

        async def record(payload: bytes, ctx: RequestContext) -> bytes:
            seen.append(ctx)
            return b""

        metadata = {"Containerd-Namespace-TTRPC": "default", "traceparent": ["a", "b"]}
        async with serving({(SVC, "R"): record}) as (_, path), await Client.connect(path) as client:
            await client.call(SVC, "R", b"", metadata=metadata)
        (ctx,) = seen
        assert (ctx.service, ctx.method) == (SVC, "R")
        assert ctx.metadata == {"containerd-namespace-ttrpc": ["default"], "traceparent": ["a", "b"]}
        assert (ctx.peer_pid, ctx.peer_uid) == (os.getpid(), os.geteuid())

    run(main())


def test_stream_id_rules_on_the_wire() -> None:
    async def main() -> None:
        async with serving(ECHO) as (_, path):
            peer = await RawPeer.connect(path)
            await peer.request(2, SVC, "Echo")
            assert await peer.response() == (2, _any_status(Code.INVALID_ARGUMENT,
                                                           "StreamID must be odd for client initiated streams"))
            await peer.request(5, SVC, "Echo", b"5")
            assert (await peer.response())[1].payload == b"5"
            for reused in (5, 3):
                await peer.request(reused, SVC, "Echo")
                assert await peer.response() == (reused, _any_status(Code.INVALID_ARGUMENT,
                                                                     "StreamID cannot be re-used and must increment"))
            await peer.send(encode_frame(5, MessageType.DATA, b"late"))
            assert await peer.response() == (5, _any_status(Code.INVALID_ARGUMENT, "StreamID is no longer active"))
            # Unknown types are ignored: the next frame out answers stream 7, not the type-9 frame.
            await peer.send(encode_frame(7, 9, b"future"))
            await peer.request(7, SVC, "Echo", b"7")
            stream_id, response = await peer.response()
            assert (stream_id, response.payload) == (7, b"7")
            peer.close()

    run(main())


class _any_status:  # noqa: N801 - reads as a matcher
    """Equal to a ttrpc.Response with this status and an empty payload."""

    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message

    def __eq__(self, other: object) -> bool:
        return status_of(other) == (self.code, self.message) and getattr(other, "payload", None) == b""

    def __repr__(self) -> str:
        return f"status({self.code}, {self.message!r})"


def test_oversized_request_is_answered_and_connection_survives() -> None:
    async def main() -> None:
        async with serving(ECHO) as (_, path):
            peer = await RawPeer.connect(path)
            length = MAX_MESSAGE + 10
            await peer.send(length.to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\x01\x00" + bytes(length))
            assert await peer.response() == (1, _any_status(
                Code.RESOURCE_EXHAUSTED, f"message length {length} exceed maximum message size of 4194304"))
            await peer.request(3, SVC, "Echo", b"after")
            assert (await peer.response())[1].payload == b"after"
            peer.close()

    run(main())


def test_oversized_reply_becomes_resource_exhausted() -> None:
    async def main() -> None:
        async def huge(payload: bytes) -> bytes:
            return bytes(MAX_MESSAGE)

        async with serving({(SVC, "Huge"): handler_of(huge)}) as (_, path), await Client.connect(path) as client:
            with pytest.raises(RpcError) as info:
                await client.call(SVC, "Huge", b"")
            assert info.value.code == Code.RESOURCE_EXHAUSTED
            assert str(info.value).startswith("message length ")

    run(main())


def test_client_disconnect_cancels_handlers_and_reports_peer() -> None:
    async def main() -> None:
        started, cancelled = asyncio.Event(), asyncio.Event()
        closed: list[Peer] = []
        gone = asyncio.Event()

        def on_closed(peer: Peer) -> None:
            closed.append(peer)
            gone.set()

        async def wait(payload: bytes) -> bytes:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return b""

        async with serving({(SVC, "Wait"): handler_of(wait)}, on_connection_closed=on_closed) as (server, path):
            client = await Client.connect(path)
            call = asyncio.create_task(client.call(SVC, "Wait", b""))
            await started.wait()
            assert server.connections == 1
            await client.close()
            with pytest.raises(ClientClosedError):
                await call
            await cancelled.wait()
            await gone.wait()
            assert server.connections == 0
            assert closed == [Peer(os.getpid(), os.geteuid(), os.getegid())]

    run(main())


def test_server_close_fails_outstanding_calls_and_cancels_handlers() -> None:
    async def main() -> None:
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def wait(payload: bytes) -> bytes:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return b""

        async with serving({(SVC, "Wait"): handler_of(wait)}) as (server, path):
            client = await Client.connect(path)
            calls = [asyncio.create_task(client.call(SVC, "Wait", b"")) for _ in range(3)]
            await started.wait()
            server.close()
            await server.wait_closed()
            for call in calls:
                with pytest.raises(ClientClosedError, match="ttrpc: closed"):
                    await call
            assert cancelled.is_set()
            with pytest.raises(ClientClosedError):
                await client.call(SVC, "Wait", b"")
            assert client.closed
            await client.close()

    run(main())


def test_response_queued_before_close_is_delivered() -> None:
    async def main() -> None:
        servers: list[Server] = []

        async def shutdown(payload: bytes) -> bytes:
            asyncio.get_running_loop().call_soon(servers[0].close)
            return b"bye"

        async with serving({(SVC, "Shutdown"): handler_of(shutdown)}) as (server, path):
            servers.append(server)
            async with await Client.connect(path) as client:
                assert await client.call(SVC, "Shutdown", b"") == b"bye"
                await server.wait_closed()

    run(main())


def test_close_shuts_reading_only_after_the_queued_response_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler that closes the server (``call_soon(server.close)``) must have its response sent
    before the connection's read side is shut: on a Unix socket our SHUT_RD is the peer's
    SEND_SHUTDOWN, so a Go client that sends anything in that window gets EPIPE, closes the
    connection and fails the pending call ("ttrpc: closed"; containerd's ShutdownSandbox)."""
    shut_before_reply: list[bool] = []
    real_shutdown = socket.socket.shutdown

    async def main() -> None:
        servers: list[Server] = []
        peers: list[RawPeer] = []

        def recording_shutdown(self: socket.socket, how: int) -> None:
            if peers and how == socket.SHUT_RD:
                try:  # is the reply already in the peer's receive buffer?
                    shut_before_reply.append(not peers[0].sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
                except BlockingIOError:
                    shut_before_reply.append(True)
            real_shutdown(self, how)

        monkeypatch.setattr(socket.socket, "shutdown", recording_shutdown)

        async def shutdown(payload: bytes) -> bytes:
            asyncio.get_running_loop().call_soon(servers[0].close)
            return b"bye"

        async with serving({(SVC, "Shutdown"): handler_of(shutdown)}) as (server, path):
            servers.append(server)
            peer = await RawPeer.connect(path)
            peers.append(peer)
            await peer.request(1, SVC, "Shutdown")
            await server.wait_closed()
            _, response = await peer.response()
            assert response.payload == b"bye"
            peer.close()

    run(main())
    assert shut_before_reply, "the server never shut the connection's read side"
    assert not any(shut_before_reply), shut_before_reply


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another uid")
def test_peer_with_other_uid_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    address = f"\0runwasm-ttrpc-test-{uuid.uuid4().hex}"  # abstract: no file permissions involved
    child = textwrap.dedent(
        """
        import os, socket, sys
        os.setgid(65534); os.setuid(65534)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect("\\0" + sys.argv[1])
        s.settimeout(5)
        sys.stdout.write(repr(s.recv(16)))
        """
    )

    async def main() -> str:
        async with serving(ECHO, address=address) as (server, _):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", child, address[1:], stdout=subprocess.PIPE
            )
            out, _ = await proc.communicate()
            assert proc.returncode == 0
            assert server.connections == 0
            return out.decode()

    with caplog.at_level(logging.WARNING, logger="runwasm.shim.ttrpc.server"):
        assert run(main()) == "b''"  # closed without a byte
    assert any("peer uid 65534, expected 0" in r.getMessage() for r in caplog.records)
