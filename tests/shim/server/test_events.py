"""EventPublisher against a real ttrpc Events server: order, envelope, and retry on a slow containerd."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from runwasm.shim.api.services.ttrpc.events.v1 import events_pb2
from runwasm.shim.server import events_factory as ev
from runwasm.shim.server.events import EventPublisher
from runwasm.shim.ttrpc.server import RequestContext, Server


async def _serve(path: Path, slow_first: float) -> tuple[Server, list[tuple[str, dict[str, list[str]]]]]:
    got: list[tuple[str, dict[str, list[str]]]] = []
    calls = 0

    async def forward(payload: bytes, ctx: RequestContext) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1 and slow_first:
            await asyncio.sleep(slow_first)  # longer than the publisher's per-attempt timeout
        env = events_pb2.ForwardRequest.FromString(payload).envelope
        got.append((env.topic, ctx.metadata))
        return b""

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(8)
    server = Server({("containerd.services.events.ttrpc.v1.Events", "Forward"): forward})
    asyncio.get_running_loop().create_task(server.serve(sock))
    return server, got


def test_events_arrive_in_order_with_namespace(tmp_path: Path) -> None:
    async def main() -> list[tuple[str, dict[str, list[str]]]]:
        server, got = await _serve(tmp_path / "e.sock", 0)
        pub = EventPublisher(str(tmp_path / "e.sock"))
        pub.start()
        pub.publish("ns1", ev.task_start("c", 1))
        pub.publish("ns1", ev.task_exit("c", "c", 1, 0, 1))
        pub.publish("ns1", ev.task_delete("c", 1, 0, 1))
        await pub.close()
        server.close()
        return got

    got = asyncio.run(main())
    assert [t for t, _ in got] == ["/tasks/start", "/tasks/exit", "/tasks/delete"]
    assert all(md["containerd-namespace-ttrpc"] == ["ns1"] for _, md in got)


def test_an_event_that_times_out_is_retried_not_dropped(tmp_path: Path) -> None:
    async def main() -> list[str]:
        server, got = await _serve(tmp_path / "e.sock", 0.5)
        pub = EventPublisher(str(tmp_path / "e.sock"), attempt_timeout=0.1)
        pub.start()
        pub.publish("ns1", ev.task_exit("c", "c", 1, 137, 1))
        pub.publish("ns1", ev.task_delete("c", 1, 137, 1))
        await pub.close()
        server.close()
        return [t for t, _ in got]

    topics = asyncio.run(main())
    # the first (slow) delivery may land late as well; what matters: nothing is lost or reordered
    assert topics[-2:] == ["/tasks/exit", "/tasks/delete"]
    assert "/tasks/exit" in topics
