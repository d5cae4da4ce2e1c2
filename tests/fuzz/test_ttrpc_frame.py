"""Fuzz: the sans-I/O ttrpc frame decoder (``runwasm.shim.ttrpc.frame``).

Properties: any byte string split anywhere decodes without raising; a stream of encoded frames
(some announcing more than the 4 MiB cap) split at random points decodes to exactly those frames
and Oversized markers, in order; the decoder never holds more than one header plus one capped
payload; it is at a frame boundary exactly when all bytes of all frames were fed.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runwasm.shim.ttrpc.frame import HEADER_SIZE, MAX_MESSAGE, Decoder, Frame, Oversized, encode_frame

pytestmark = pytest.mark.fuzz

u32 = st.integers(0, 0xFFFF_FFFF)
u8 = st.integers(0, 0xFF)
frames = st.builds(Frame, stream_id=u32, type=u8, flags=u8, payload=st.binary(max_size=300))
# an oversized frame: the header announces > 4 MiB; its payload bytes are sent but must be dropped
oversized = st.builds(Oversized, stream_id=u32, type=u8, flags=u8,
                      length=st.integers(MAX_MESSAGE + 1, MAX_MESSAGE + 4096))


def _wire(event: Frame | Oversized) -> bytes:
    if isinstance(event, Frame):
        return encode_frame(event.stream_id, event.type, event.payload, event.flags)
    return struct.pack(">IIBB", event.length, event.stream_id, event.type, event.flags) + b"\x5a" * event.length


def _feed_in_pieces(decoder: Decoder, data: bytes, cuts: list[int]) -> list[Frame | Oversized]:
    out: list[Frame | Oversized] = []
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    for a, b in zip(points, points[1:], strict=False):
        decoder.feed(data[a:b])
        out += list(decoder)
        assert len(decoder._buf) <= HEADER_SIZE + MAX_MESSAGE  # bounded: never a whole oversized payload
    return out


@given(st.lists(st.one_of(frames, frames, frames, oversized), max_size=12),
       st.lists(st.integers(0, 1 << 23), max_size=20))
def test_frames_split_anywhere_decode_to_themselves(events: list[Frame | Oversized], cuts: list[int]) -> None:
    data = b"".join(_wire(e) for e in events)
    decoder = Decoder()
    assert _feed_in_pieces(decoder, data, cuts) == events
    assert decoder.at_boundary


@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=10))
def test_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    decoder = Decoder()
    events = _feed_in_pieces(decoder, data, cuts)
    consumed = sum(HEADER_SIZE + (len(e.payload) if isinstance(e, Frame) else 0) for e in events)
    assert consumed <= len(data)


@given(st.lists(frames, min_size=1, max_size=5), st.data())
def test_a_truncated_stream_is_not_at_a_boundary(events: list[Frame], data: st.DataObject) -> None:
    wire = b"".join(_wire(e) for e in events)
    cut = data.draw(st.integers(1, len(wire) - 1)) if len(wire) > 1 else 0
    decoder = Decoder()
    decoder.feed(wire[:cut])
    got = list(decoder)
    assert got == events[:len(got)]
    ends = [sum(len(_wire(e)) for e in events[:i]) for i in range(len(events) + 1)]
    assert decoder.at_boundary == (cut in ends)
