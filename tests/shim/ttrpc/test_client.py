"""The asyncio client against a scripted frame-level server on a socketpair or Unix socket."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from typing import Any

import pytest
from google.rpc import status_pb2

from runwasm.shim.api.ttrpc import ttrpc_pb2
from runwasm.shim.ttrpc.client import Client, ClientClosedError
from runwasm.shim.ttrpc.frame import MAX_MESSAGE, Decoder, Frame, MessageType, encode_frame
from runwasm.shim.ttrpc.status import Code, RpcError

from .helpers import run


class FakeServer:
    """The server end of a socketpair: reads Request frames, writes whatever the test scripts."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.decoder = Decoder()
        self.frames: list[Frame] = []

    async def request(self) -> tuple[int, Any]:
        """The next Request frame: (stream id, decoded ttrpc.Request)."""
        loop = asyncio.get_running_loop()
        while not self.frames:
            data = await loop.sock_recv(self.sock, 65536)
            assert data, "client closed the connection"
            self.decoder.feed(data)
            for event in self.decoder:
                assert isinstance(event, Frame)
                self.frames.append(event)
        frame = self.frames.pop(0)
        assert (frame.type, frame.flags) == (MessageType.REQUEST, 0)
        return frame.stream_id, ttrpc_pb2.Request.FromString(frame.payload)

    async def reply(self, stream_id: int, payload: bytes = b"", code: int = 0, message: str = "",
                    with_status: bool = True) -> None:
        response = ttrpc_pb2.Response(payload=payload)
        if with_status:
            response.status.CopyFrom(status_pb2.Status(code=code, message=message))
        await self.send(encode_frame(stream_id, MessageType.RESPONSE, response.SerializeToString()))

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)


async def _pair() -> tuple[Client, FakeServer]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return await Client.from_socket(ours), FakeServer(theirs)


def test_stream_ids_are_odd_and_increasing_and_request_is_well_formed() -> None:
    async def main() -> None:
        client, server = await _pair()
        calls = [asyncio.create_task(client.call("svc", f"M{i}", bytes([i]))) for i in range(3)]
        seen = [await server.request() for _ in calls]
        assert [sid for sid, _ in seen] == [1, 3, 5]
        assert [(r.service, r.method, r.payload, r.timeout_nano, len(r.metadata)) for _, r in seen] == [
            ("svc", f"M{i}", bytes([i]), 0, 0) for i in range(3)
        ]
        # Answer out of order; each call gets its own reply.
        for sid in (5, 1, 3):
            await server.reply(sid, payload=f"r{sid}".encode())
        assert await asyncio.gather(*calls) == [b"r1", b"r3", b"r5"]
        await client.close()
        server.sock.close()

    run(main())


def test_timeout_and_metadata_on_the_wire() -> None:
    async def main() -> None:
        client, server = await _pair()
        call = asyncio.create_task(client.call(
            "svc", "M", b"", timeout=2.5,
            metadata={"Containerd-Namespace-TTRPC": "k8s.io", "traceparent": ["a", "b"]},
        ))
        sid, request = await server.request()
        assert 2_400_000_000 < request.timeout_nano <= 2_500_000_000
        assert [(kv.key, kv.value) for kv in request.metadata] == [
            ("containerd-namespace-ttrpc", "k8s.io"), ("traceparent", "a"), ("traceparent", "b"),
        ]
        await server.reply(sid, with_status=False)  # an omitted status means OK
        assert await call == b""
        await client.close()
        server.sock.close()

    run(main())


def test_error_status_raises_rpc_error() -> None:
    async def main() -> None:
        client, server = await _pair()
        calls = [asyncio.create_task(client.call("svc", "M", b"")) for _ in range(2)]
        (sid1, _), (sid2, _) = await server.request(), await server.request()
        await server.reply(sid1, code=5, message="container not created: not found")
        await server.reply(sid2, code=99, message="from the future")
        with pytest.raises(RpcError) as first:
            await calls[0]
        assert (first.value.code, str(first.value)) == (Code.NOT_FOUND, "container not created: not found")
        with pytest.raises(RpcError) as second:
            await calls[1]
        assert (second.value.code, str(second.value)) == (Code.UNKNOWN, "from the future")
        await client.close()
        server.sock.close()

    run(main())


def test_local_timeout_and_late_response_is_dropped() -> None:
    async def main() -> None:
        client, server = await _pair()
        with pytest.raises(RpcError) as info:
            await client.call("svc", "Slow", b"", timeout=0.05)
        assert (info.value.code, str(info.value)) == (Code.DEADLINE_EXCEEDED, "context deadline exceeded")
        sid, _ = await server.request()
        await server.reply(sid, payload=b"too late")
        call = asyncio.create_task(client.call("svc", "Next", b""))
        sid2, _ = await server.request()
        assert sid2 == sid + 2
        await server.reply(sid2, payload=b"next")
        assert await call == b"next"
        with pytest.raises(RpcError, match="deadline"):
            await client.call("svc", "M", b"", timeout=0)
        await client.close()
        server.sock.close()

    run(main())


def test_oversized_request_is_refused_before_sending() -> None:
    async def main() -> None:
        client, server = await _pair()
        with pytest.raises(RpcError) as info:
            await client.call("svc", "Big", bytes(MAX_MESSAGE))
        assert info.value.code == Code.RESOURCE_EXHAUSTED
        call = asyncio.create_task(client.call("svc", "Small", b"x"))
        sid, request = await server.request()  # nothing of the big request reached the wire
        assert request.method == "Small"
        await server.reply(sid, payload=b"ok")
        assert await call == b"ok"
        await client.close()
        server.sock.close()

    run(main())


def test_oversized_response_fails_only_its_call() -> None:
    async def main() -> None:
        client, server = await _pair()
        big, small = (asyncio.create_task(client.call("svc", m, b"")) for m in ("Big", "Small"))
        (sid_big, _), (sid_small, _) = await server.request(), await server.request()
        length = MAX_MESSAGE + 1
        await server.send(length.to_bytes(4, "big") + sid_big.to_bytes(4, "big") + b"\x02\x00" + bytes(length))
        await server.reply(sid_small, payload=b"small")
        with pytest.raises(RpcError) as info:
            await big
        assert info.value.code == Code.RESOURCE_EXHAUSTED
        assert await small == b"small"
        await client.close()
        server.sock.close()

    run(main())


def test_peer_close_fails_every_outstanding_call() -> None:
    async def main() -> None:
        client, server = await _pair()
        calls = [asyncio.create_task(client.call("svc", "Wait", b"")) for _ in range(3)]
        for _ in calls:
            await server.request()
        server.sock.close()
        for call in calls:
            with pytest.raises(ClientClosedError, match="ttrpc: closed"):
                await call
        assert client.closed
        with pytest.raises(ClientClosedError):
            await client.call("svc", "After", b"")
        await client.close()

    run(main())


def test_close_fails_outstanding_calls_and_is_idempotent() -> None:
    async def main() -> None:
        client, server = await _pair()
        call = asyncio.create_task(client.call("svc", "Wait", b""))
        await server.request()
        await client.close()
        await client.close()
        with pytest.raises(ClientClosedError):
            await call
        assert await asyncio.get_running_loop().sock_recv(server.sock, 16) == b""
        server.sock.close()

    run(main())


@pytest.mark.parametrize("scheme", ["", "unix://"])
def test_connect_by_path_or_unix_url(scheme: str) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="ttrpc-") as tmp:
            path = os.path.join(tmp, "s.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            listener.listen()
            listener.setblocking(False)
            loop = asyncio.get_running_loop()
            accepted = loop.create_task(loop.sock_accept(listener))
            async with await Client.connect(scheme + path) as client:
                server = FakeServer((await accepted)[0])
                call = asyncio.create_task(client.call("svc", "M", b"ping"))
                sid, request = await server.request()
                await server.reply(sid, payload=request.payload)
                assert await call == b"ping"
            server.sock.close()
            listener.close()

    run(main())


def test_connect_to_missing_socket_raises_oserror() -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="ttrpc-") as tmp, pytest.raises(FileNotFoundError):
            await Client.connect(os.path.join(tmp, "absent.sock"))

    run(main())


def test_frames_larger_than_the_socket_buffer_stay_whole_and_in_order() -> None:
    """Both ends write a frame at once when their writer is idle, and hand the rest of a frame
    the socket did not take to the writer: nothing may be cut, lost or overtaken. A real server,
    2 MiB requests and replies (more than a Unix socket buffers) between small ones."""
    from runwasm.shim.ttrpc.server import RequestContext

    from .helpers import serving

    big = bytes(range(256)) * (2 * 1024 * 4)  # 2 MiB
    seen: list[int] = []

    async def echo(payload: bytes, ctx: RequestContext) -> bytes:
        seen.append(len(payload))
        return payload + b"!"

    async def main() -> None:
        async with serving({("t.v1.E", "Echo"): echo}) as (_server, path):
            client = await Client.connect(path)
            try:
                payloads = [big, b"a", big[:100_000], b"b", big, b"c"]
                calls = [asyncio.ensure_future(client.call("t.v1.E", "Echo", p)) for p in payloads]
                replies = await asyncio.gather(*calls)
                assert replies == [p + b"!" for p in payloads]
                assert sorted(seen) == sorted(len(p) for p in payloads)
                # and again one at a time, each call starting with an idle writer
                for p in payloads:
                    assert await client.call("t.v1.E", "Echo", p) == p + b"!"
            finally:
                await client.close()

    run(main())
