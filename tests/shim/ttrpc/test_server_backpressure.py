"""Per-connection back-pressure of the ttrpc server: a real server, a raw socket client that
pipelines requests and never reads. Every wait is for a condition, never for a duration."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import weakref
from collections.abc import Callable

from runwasm.shim.api.ttrpc import ttrpc_pb2
from runwasm.shim.ttrpc.frame import MessageType, encode_frame
from runwasm.shim.ttrpc.server import ConnectionStats, Server

from .helpers import handler_of, run, serving

SVC = "test.v1.Echo"
REPLY = b"r" * 100


def _requests(count: int, method: str) -> bytes:
    body = ttrpc_pb2.Request(service=SVC, method=method, payload=b"x").SerializeToString()
    return b"".join(encode_frame(2 * i + 1, MessageType.REQUEST, body) for i in range(count))


async def _until(condition: Callable[[], bool]) -> None:
    """Poll ``condition()`` on the loop; the test's overall timeout bounds it."""
    while not condition():  # noqa: ASYNC110 - the server exposes counters, not events
        await asyncio.sleep(0.01)


def _only(server: Server) -> ConnectionStats:
    (stats,) = server.connection_stats()
    return stats


async def _released(server: Server) -> None:
    """The connection ends and nothing of it stays reachable."""
    conn = weakref.ref(next(iter(server._connections)))  # noqa: SLF001 - the state under test
    await _until(lambda: server.connections == 0)
    await _until(lambda: gc.collect() >= 0 and conn() is None)
    assert server.connection_stats() == []


def test_a_client_that_never_reads_stops_the_server_reading() -> None:
    total = 50_000

    async def main() -> None:
        async def echo(payload: bytes) -> bytes:
            return REPLY

        bounds = {"max_queued_bytes": 4096, "max_in_flight": 16}
        async with serving({(SVC, "Echo"): handler_of(echo)}, **bounds) as (server, path):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(path)
            sent = threading.Event()

            def pipeline() -> None:  # blocks for good once the server stops reading
                try:
                    client.sendall(_requests(total, "Echo"))
                    sent.set()
                except OSError:
                    pass

            threading.Thread(target=pipeline, daemon=True).start()
            # without back-pressure the server reads all 50,000 requests and the client's send ends
            # the stable state: paused with no handler left to make progress, only unsent responses
            def stuck() -> bool:
                stats = server.connection_stats()
                return bool(stats) and stats[0].paused and stats[0].in_flight == 0 and stats[0].queued_bytes >= 4096

            await _until(lambda: sent.is_set() or stuck())
            stats = _only(server)
            assert not sent.is_set()
            assert stats.paused
            assert stats.requests < total // 10  # the rest is left in the socket: the client is blocked
            assert 4096 <= stats.queued_bytes < 4096 + 16 * (len(REPLY) + 20)  # what running handlers added
            for _ in range(100):  # nothing wakes a paused connection but its own progress
                await asyncio.sleep(0)
            assert _only(server) == stats
            client.shutdown(socket.SHUT_RDWR)  # ends the blocked sendall too (close would wait for it)
            client.close()  # the server's pending write fails: it frees what it held
            await _released(server)

    run(main())


def test_calls_in_flight_are_bounded_and_a_hang_up_while_paused_ends_them() -> None:
    async def main() -> None:
        cancelled: list[None] = []
        release = asyncio.Event()

        async def wait(payload: bytes) -> bytes:
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancelled.append(None)
                raise
            return b""

        async with serving({(SVC, "Wait"): handler_of(wait)}, max_in_flight=8) as (server, path):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(path)
            client.sendall(_requests(1000, "Wait"))  # small enough for the socket buffers
            await _until(lambda: server.connections == 1 and _only(server).paused)
            stats = _only(server)
            assert (stats.requests, stats.in_flight) == (8, 8)
            client.close()  # noticed while paused, though 992 requests are still unread
            await _released(server)
            assert len(cancelled) == 8

    run(main())


def test_reading_resumes_when_calls_finish() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def wait(payload: bytes) -> bytes:
            await release.wait()
            return b""

        async with serving({(SVC, "Wait"): handler_of(wait)}, max_in_flight=4) as (server, path):
            loop = asyncio.get_running_loop()
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(path)
            client.setblocking(False)
            await loop.sock_sendall(client, _requests(20, "Wait"))
            await _until(lambda: server.connections == 1 and _only(server).paused)
            assert _only(server).requests == 4
            release.set()  # every handler finishes at once from now on
            got = b""
            # 20 empty OK responses of 12 bytes each (10-byte header, `0a 00`); counting b"\x02"
            # stopped after 10 of them (the length field holds a 2 as well as the type)
            while len(got) < 20 * 12:
                chunk = await loop.sock_recv(client, 65536)
                assert chunk, f"connection closed after {len(got)} response bytes"
                got += chunk
            assert len(got) == 20 * 12
            assert [got[i + 8] for i in range(0, len(got), 12)] == [MessageType.RESPONSE] * 20
            assert _only(server).requests == 20
            client.close()
            await _released(server)

    run(main())
