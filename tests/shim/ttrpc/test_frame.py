"""Framing: the shim-protocol.md §13.5 byte vectors, partial feeds and the 4 MiB cap."""

from __future__ import annotations

import pytest
from google.rpc import status_pb2

from runwasm.shim.api.runtime.task.v3 import shim_pb2
from runwasm.shim.api.ttrpc import ttrpc_pb2
from runwasm.shim.ttrpc.frame import (
    HEADER_SIZE,
    MAX_MESSAGE,
    Decoder,
    Frame,
    MessageType,
    Oversized,
    OversizedMessageError,
    encode_frame,
)
from runwasm.shim.ttrpc.status import Code

# shim-protocol.md §13.5, verbatim.
CONNECT_REQUEST = (
    bytes.fromhex("00 00 00 50 00 00 00 01 01 00")
    + bytes.fromhex("0a 17") + b"containerd.task.v3.Task"
    + bytes.fromhex("12 07") + b"Connect"
    + bytes.fromhex("1a 05 0a 03") + b"abc"
    + bytes.fromhex("2a 25 0a 1a") + b"containerd-namespace-ttrpc"
    + bytes.fromhex("12 07") + b"default"
)
CONNECT_RESPONSE = bytes.fromhex("00 00 00 0a 00 00 00 01 02 00 0a 00 12 06 08 d2 09 10 ae 2c")
NOT_FOUND_RESPONSE = (
    bytes.fromhex("00 00 00 26 00 00 00 03 02 00 0a 24 08 05 12 20") + b"container not created: not found"
)


def _connect_request() -> bytes:
    request = ttrpc_pb2.Request(
        service="containerd.task.v3.Task",
        method="Connect",
        payload=shim_pb2.ConnectRequest(id="abc").SerializeToString(),
    )
    request.metadata.add(key="containerd-namespace-ttrpc", value="default")
    return bytes(request.SerializeToString())


def _connect_response() -> bytes:
    response = ttrpc_pb2.Response(
        payload=shim_pb2.ConnectResponse(shim_pid=1234, task_pid=5678).SerializeToString()
    )
    response.status.SetInParent()
    return bytes(response.SerializeToString())


def _not_found_response() -> bytes:
    status = status_pb2.Status(code=Code.NOT_FOUND, message="container not created: not found")
    return bytes(ttrpc_pb2.Response(status=status).SerializeToString())


VECTORS = [
    pytest.param(CONNECT_REQUEST, 1, MessageType.REQUEST, _connect_request, id="request"),
    pytest.param(CONNECT_RESPONSE, 1, MessageType.RESPONSE, _connect_response, id="ok-response"),
    pytest.param(NOT_FOUND_RESPONSE, 3, MessageType.RESPONSE, _not_found_response, id="error-response"),
]


@pytest.mark.parametrize(("wire", "stream_id", "message_type", "build"), VECTORS)
def test_encode_vector(wire: bytes, stream_id: int, message_type: MessageType, build: object) -> None:
    assert callable(build)
    assert encode_frame(stream_id, message_type, build()) == wire


@pytest.mark.parametrize(("wire", "stream_id", "message_type", "build"), VECTORS)
def test_decode_vector(wire: bytes, stream_id: int, message_type: MessageType, build: object) -> None:
    decoder = Decoder()
    decoder.feed(wire)
    assert list(decoder) == [Frame(stream_id, message_type, 0, wire[HEADER_SIZE:])]
    assert decoder.at_boundary


def test_decoded_vectors_parse_back() -> None:
    decoder = Decoder()
    decoder.feed(CONNECT_REQUEST + CONNECT_RESPONSE + NOT_FOUND_RESPONSE)
    request_frame, ok_frame, error_frame = list(decoder)
    assert isinstance(request_frame, Frame)
    request = ttrpc_pb2.Request.FromString(request_frame.payload)
    assert (request.service, request.method) == ("containerd.task.v3.Task", "Connect")
    assert shim_pb2.ConnectRequest.FromString(request.payload).id == "abc"
    assert [(kv.key, kv.value) for kv in request.metadata] == [("containerd-namespace-ttrpc", "default")]
    assert isinstance(ok_frame, Frame)
    ok = ttrpc_pb2.Response.FromString(ok_frame.payload)
    assert ok.HasField("status")
    assert ok.status.code == 0
    reply = shim_pb2.ConnectResponse.FromString(ok.payload)
    assert (reply.shim_pid, reply.task_pid) == (1234, 5678)
    assert isinstance(error_frame, Frame)
    error = ttrpc_pb2.Response.FromString(error_frame.payload)
    assert (error.status.code, error.status.message) == (5, "container not created: not found")
    assert error.payload == b""


def test_one_byte_at_a_time() -> None:
    stream = CONNECT_REQUEST + CONNECT_RESPONSE + encode_frame(5, MessageType.DATA, b"") + NOT_FOUND_RESPONSE
    decoder = Decoder()
    events = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        events += list(decoder)
        # Only a frame's last byte completes it.
        assert decoder.at_boundary == (len(events) > 0 and i + 1 in _frame_ends(stream))
    assert [(e.stream_id, e.type) for e in events] == [(1, 1), (1, 2), (5, 3), (3, 2)]
    assert isinstance(events[2], Frame)
    assert events[2].payload == b""


def _frame_ends(stream: bytes) -> set[int]:
    ends, pos = set(), 0
    while pos < len(stream):
        pos += HEADER_SIZE + int.from_bytes(stream[pos : pos + 4], "big")
        ends.add(pos)
    return ends


def test_iteration_stops_without_consuming_partial_frame() -> None:
    decoder = Decoder()
    decoder.feed(CONNECT_RESPONSE[:-1])
    assert list(decoder) == []
    assert not decoder.at_boundary
    decoder.feed(CONNECT_RESPONSE[-1:])
    assert [e.stream_id for e in decoder] == [1]


def test_unknown_type_and_flags_pass_through() -> None:
    decoder = Decoder()
    decoder.feed(bytes.fromhex("00 00 00 01 00 00 00 07 09 ff 2a"))
    assert list(decoder) == [Frame(7, 9, 0xFF, b"\x2a")]


def test_exactly_max_message_is_accepted() -> None:
    payload = bytes(MAX_MESSAGE)
    wire = encode_frame(1, MessageType.REQUEST, payload)
    decoder = Decoder()
    decoder.feed(wire)
    (frame,) = list(decoder)
    assert isinstance(frame, Frame)
    assert len(frame.payload) == MAX_MESSAGE


def test_encoder_refuses_oversized_payload() -> None:
    with pytest.raises(OversizedMessageError) as info:
        encode_frame(1, MessageType.REQUEST, bytes(MAX_MESSAGE + 1))
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    assert str(info.value) == "message length 4194305 exceed maximum message size of 4194304"


@pytest.mark.parametrize(("stream_id", "message_type", "flags"), [(-1, 1, 0), (1 << 32, 1, 0), (1, 256, 0), (1, 1, 256)])
def test_encoder_rejects_fields_out_of_range(stream_id: int, message_type: int, flags: int) -> None:
    with pytest.raises(ValueError, match="bits"):
        encode_frame(stream_id, message_type, b"", flags)


def _oversized_stream(length: int) -> bytes:
    oversized_header = length.to_bytes(4, "big") + (9).to_bytes(4, "big") + bytes([1, 0])
    # The discarded payload looks like frame headers; none of it may leak out as a frame.
    junk = (CONNECT_RESPONSE * (length // len(CONNECT_RESPONSE) + 1))[:length]
    return CONNECT_REQUEST + oversized_header + junk + NOT_FOUND_RESPONSE


# Chunk splits: the one-byte case feeds every byte of the request, the oversized header and the
# first and last 64 KiB of the discarded payload one at a time, and the middle in one piece.
@pytest.mark.parametrize("chunk", [1, 997, 4096, 1 << 20])
def test_oversized_frame_is_discarded_then_decoding_resyncs(chunk: int) -> None:
    length = MAX_MESSAGE + 3
    stream = _oversized_stream(length)
    if chunk == 1:
        head = len(CONNECT_REQUEST) + HEADER_SIZE + (64 << 10)
        tail = len(stream) - len(NOT_FOUND_RESPONSE) - (64 << 10)
        pieces = [stream[i : i + 1] for i in range(head)] + [stream[head:tail]]
        pieces += [stream[i : i + 1] for i in range(tail, len(stream))]
    else:
        pieces = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    assert b"".join(pieces) == stream
    decoder = Decoder()
    events = []
    for piece in pieces:
        decoder.feed(piece)
        events += list(decoder)
    assert events[0] == Frame(1, 1, 0, CONNECT_REQUEST[HEADER_SIZE:])
    assert events[1] == Oversized(stream_id=9, type=1, flags=0, length=length)
    assert events[2] == Frame(3, 2, 0, NOT_FOUND_RESPONSE[HEADER_SIZE:])
    assert len(events) == 3
    assert decoder.at_boundary


def test_oversized_event_comes_with_the_header_and_payload_is_not_buffered() -> None:
    length = 0xFFFF_FFFF
    decoder = Decoder()
    decoder.feed(length.to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\x01\x00")
    assert list(decoder) == [Oversized(1, 1, 0, length)]
    decoder.feed(bytes(1 << 20))
    assert list(decoder) == []
    assert not decoder.at_boundary
    assert len(decoder._buf) == 0  # discarded on arrival, not kept
