"""Fuzz: a real in-process ttrpc ``Server`` on a Unix socket, fed pipelined random frames.

A model of the protocol rules (``runwasm.shim.ttrpc.streams``) predicts, for every frame sent,
the Response code the server owes (or that it owes none); the server must answer each stream with
exactly that, whatever else was pipelined around it (oversized frames, even or re-used ids,
undecodable requests, unknown services, failing handlers, frames of unknown types). Then the
peer sends a truncated frame or garbage and hangs up: the server stays up (a fresh connection
is served), every connection is closed, and no fd leaks.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from runwasm.shim.api.ttrpc import ttrpc_pb2
from runwasm.shim.ttrpc.frame import MAX_MESSAGE, MessageType, encode_frame
from runwasm.shim.ttrpc.status import Code, RpcError
from tests.fuzz.conftest import open_fds
from tests.shim.ttrpc.helpers import RawPeer, run, serving, status_of

pytestmark = pytest.mark.fuzz

SERVICE = "fuzz.v1.Echo"


async def echo(payload: bytes, ctx: object) -> bytes:
    return payload


async def refuse(payload: bytes, ctx: object) -> bytes:
    raise RpcError(Code.NOT_FOUND, "nothing here")


async def crash(payload: bytes, ctx: object) -> bytes:
    raise ValueError("handler bug")


HANDLERS = {(SERVICE, "Echo"): echo, (SERVICE, "Refuse"): refuse, (SERVICE, "Crash"): crash}
EXPECT_METHOD = {"Echo": Code.OK, "Refuse": Code.NOT_FOUND, "Crash": Code.UNKNOWN}


@dataclass(frozen=True)
class Send:
    stream_id: int | str
    type: int
    payload: bytes
    oversized: int = 0  # > 0: the header announces this many (> 4 MiB) bytes


requests = st.builds(
    lambda svc, method, body: ttrpc_pb2.Request(service=svc, method=method, payload=body).SerializeToString(),
    st.sampled_from([SERVICE, SERVICE, SERVICE, "fuzz.v1.Nope", ""]),
    st.sampled_from(["Echo", "Refuse", "Crash", "Missing"]),
    st.binary(max_size=64))
payloads = st.one_of(requests, requests, requests, st.binary(max_size=64))
# stream ids: mostly the next odd id (so most requests are dispatched), sometimes even or re-used
ids = st.sampled_from(["next", "next", "next", "next", "even", "reuse"])
sends = st.one_of(
    st.builds(Send, stream_id=ids, type=st.just(int(MessageType.REQUEST)), payload=payloads),
    st.builds(Send, stream_id=ids, type=st.just(int(MessageType.REQUEST)), payload=payloads),
    st.builds(Send, stream_id=ids, type=st.sampled_from([2, 7, 200]), payload=st.binary(max_size=16)),
    st.builds(Send, stream_id=ids, type=st.just(int(MessageType.REQUEST)), payload=st.just(b""),
              oversized=st.integers(MAX_MESSAGE + 1, MAX_MESSAGE + 512)),
)


def number(plan: list[Send]) -> list[Send]:
    """Give the symbolic ids of ``plan`` numbers: next odd, an even one, or a re-used one."""
    out, last = [], 1
    for s in plan:
        sid = {"next": last + 2, "even": last + 1, "reuse": max(1, last - 2)}[str(s.stream_id)]
        last = max(last, sid) if sid % 2 else last
        out.append(Send(sid, s.type, s.payload, s.oversized))
    return out


def expected_codes(plan: list[Send]) -> list[tuple[int, int]]:
    """(stream id, code) of every Response owed, by the rules in ttrpc/streams.py and server.py."""
    owed: list[tuple[int, int]] = []
    last = 0
    for s in plan:
        if s.oversized:
            owed.append((s.stream_id, Code.RESOURCE_EXHAUSTED))
        elif s.stream_id % 2 != 1:
            owed.append((s.stream_id, Code.INVALID_ARGUMENT))
        elif s.type != MessageType.REQUEST:
            continue  # Response or unknown types are ignored (Data frames are not generated)
        elif s.stream_id <= last:
            owed.append((s.stream_id, Code.INVALID_ARGUMENT))
        else:
            last = s.stream_id
            try:
                req = ttrpc_pb2.Request.FromString(s.payload)
            except DecodeError:
                owed.append((s.stream_id, Code.INVALID_ARGUMENT))
                continue
            if req.service != SERVICE:
                owed.append((s.stream_id, Code.UNIMPLEMENTED))
            else:
                owed.append((s.stream_id, EXPECT_METHOD.get(req.method, Code.UNIMPLEMENTED)))
    return owed


def _bytes(s: Send) -> bytes:
    if s.oversized:
        return struct.pack(">IIBB", s.oversized, s.stream_id, s.type, 0) + b"\0" * s.oversized
    return encode_frame(s.stream_id, s.type, s.payload)


ECHO = ttrpc_pb2.Request(service=SERVICE, method="Echo", payload=b"burst").SerializeToString()


@given(st.lists(sends, max_size=25), st.integers(0, 400), st.binary(max_size=40), st.booleans())
def test_pipelined_random_frames_get_exactly_the_owed_responses(plan: list[Send], burst: int, tail: bytes,
                                                                 truncate: bool) -> None:
    """``burst`` valid requests follow the plan (hundreds: enough to fill the socket buffers both
    ways, and to meet any per-connection bound on requests in flight): each is answered once."""
    plan = number([*plan, *[Send("next", int(MessageType.REQUEST), ECHO)] * burst])
    owed = expected_codes(plan)
    before = open_fds()

    async def main() -> None:
        closed: list[object] = []
        all_closed = asyncio.Event()

        def on_closed(peer: object) -> None:
            closed.append(peer)
            if len(closed) == 2:  # the fuzzed connection and the fresh one
                all_closed.set()

        async with serving(HANDLERS, on_connection_closed=on_closed) as (server, path):
            peer = await RawPeer.connect(path)
            sender = asyncio.create_task(peer.send(b"".join(_bytes(s) for s in plan)))
            got = []
            for _ in owed:
                stream_id, response = await peer.response()
                got.append((stream_id, status_of(response)[0]))
            await sender
            assert sorted(got) == sorted(owed)
            # then a truncated frame (or garbage) and a hang-up: the server lives on
            await peer.send(encode_frame(99999, MessageType.REQUEST, b"x" * 50)[:30] if truncate else tail)
            peer.close()
            fresh = await RawPeer.connect(path)
            req = ttrpc_pb2.Request(service=SERVICE, method="Echo", payload=b"ping").SerializeToString()
            await fresh.send(encode_frame(1, MessageType.REQUEST, req))
            stream_id, response = await fresh.response()
            assert (stream_id, status_of(response)[0], response.payload) == (1, Code.OK, b"ping")
            fresh.close()
            async with asyncio.timeout(30):
                await all_closed.wait()
            assert server.connections == 0

    run(main())
    assert open_fds() == before
