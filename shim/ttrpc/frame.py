"""Sans-I/O ttrpc framing: bytes in, frames out; frames in, bytes out.

Stdlib only, and no I/O at all: the shim's ``start`` path may import this module, and the asyncio
server and client are thin loops around it.

Theory of operation
-------------------

Wire format (containerd/ttrpc ``channel.go``). Every message is one frame::

    +----------------+----------------+--------+--------+------------------------+
    | length: u32 BE | stream id: u32 | type u8| flags u8| payload (length bytes)|
    +----------------+----------------+--------+--------+------------------------+

``length`` counts the payload only, never the 10-byte header. Types are :class:`MessageType`
(Request 1, Response 2, Data 3); flags depend on the type (the ``FLAG_*`` constants). The payload
is a protobuf ``ttrpc.Request`` / ``ttrpc.Response`` or stream data; this module never looks at it.

Rules this module enforces:

1. **The 4 MiB cap is symmetric.** :func:`encode_frame` refuses payloads larger than
   :data:`MAX_MESSAGE` with :class:`OversizedMessageError` (RESOURCE_EXHAUSTED, the text Go uses),
   so an oversized message never reaches the wire.
2. **An oversized inbound frame is skipped, not fatal.** When a header announces more than the
   cap, :class:`Decoder` yields :class:`Oversized` (stream id, type, flags and length) as soon as the
   header is complete, then discards exactly ``length`` payload bytes without buffering them and
   resumes at the next header. The connection stays usable; the server answers that stream with
   RESOURCE_EXHAUSTED (:func:`oversized_text`), as Go ttrpc does.
3. **The decoder is incremental and bounded.** :meth:`Decoder.feed` accepts any split of the
   byte stream (one byte at a time is fine); iterating yields every complete event and stops when
   more bytes are needed. At most one header plus one capped payload is ever buffered.
4. **Unknown types and flags pass through.** The decoder does not judge them; the server ignores
   unknown types (forward compatibility) and the stream-id rules live in the server.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Iterator

from runwasm.shim.ttrpc.status import Code, RpcError

__all__ = [
    "FLAG_NO_DATA",
    "FLAG_REMOTE_CLOSED",
    "FLAG_REMOTE_OPEN",
    "HEADER_SIZE",
    "MAX_MESSAGE",
    "Decoder",
    "Event",
    "Frame",
    "MessageType",
    "Oversized",
    "OversizedMessageError",
    "encode_frame",
    "oversized_text",
]

HEADER_SIZE = 10
"""Bytes in a frame header: length u32, stream id u32, type u8, flags u8, all big-endian."""

MAX_MESSAGE = 4 << 20
"""Largest payload either side sends or accepts: 4 MiB (4194304), as in Go ttrpc."""

_HEADER = struct.Struct(">IIBB")
_MAX_STREAM_ID = 0xFFFF_FFFF

# Request flags. 0 means unary, the only kind the Task, Events and Sandbox services use.
FLAG_REMOTE_CLOSED = 0x01
"""Request: the client sends no data (server streaming). Data: the last frame of the stream."""
FLAG_REMOTE_OPEN = 0x02
"""Request: the client will send Data frames on this stream (client streaming)."""
FLAG_NO_DATA = 0x04
"""Data: the frame carries no message (only meaningful together with FLAG_REMOTE_CLOSED)."""


class MessageType(enum.IntEnum):
    """Frame types. Values outside this enum may arrive and must be ignored by receivers."""

    REQUEST = 1
    RESPONSE = 2
    DATA = 3


def oversized_text(length: int) -> str:
    """The status message Go ttrpc uses for a payload of ``length`` bytes over the cap."""
    return f"message length {length} exceed maximum message size of {MAX_MESSAGE}"


class OversizedMessageError(RpcError):
    """A payload is larger than :data:`MAX_MESSAGE`; always RESOURCE_EXHAUSTED."""

    def __init__(self, length: int) -> None:
        super().__init__(Code.RESOURCE_EXHAUSTED, oversized_text(length))
        self.length = length


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """One complete frame. ``type`` is an ``int`` because unknown types must survive decoding."""

    stream_id: int
    type: int
    flags: int
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Oversized:
    """A frame whose header announced ``length`` > :data:`MAX_MESSAGE`; its payload is discarded."""

    stream_id: int
    type: int
    flags: int
    length: int


Event = Frame | Oversized


def encode_frame(stream_id: int, message_type: int, payload: bytes, flags: int = 0) -> bytes:
    """Return the header and payload of one frame, ready to write.

    Args:
        stream_id: 0..2**32-1 (the server enforces odd ids for requests; this function does not).
        message_type: a :class:`MessageType`, or any 0..255 value.
        payload: at most :data:`MAX_MESSAGE` bytes.
        flags: 0..255.

    Raises:
        OversizedMessageError: the payload exceeds :data:`MAX_MESSAGE`.
        ValueError: a header field does not fit its width.
    """
    if len(payload) > MAX_MESSAGE:
        raise OversizedMessageError(len(payload))
    if not 0 <= stream_id <= _MAX_STREAM_ID:
        raise ValueError(f"stream id must fit in 32 bits, got {stream_id}")
    if not 0 <= message_type <= 0xFF or not 0 <= flags <= 0xFF:
        raise ValueError(f"type and flags must fit in 8 bits, got {message_type} and {flags}")
    return _HEADER.pack(len(payload), stream_id, message_type, flags) + payload


class Decoder:
    """Incremental frame decoder for one direction of one connection.

    Usage::

        decoder.feed(data)
        for event in decoder:      # Frame or Oversized, in wire order
            ...

    Iteration stops (without error) when the buffered bytes do not complete another event; feed
    more and iterate again. The decoder never raises on input: every byte string is a prefix of
    some valid frame sequence.
    """

    __slots__ = ("_buf", "_pos", "_header", "_discard")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        # The header of the frame whose payload is awaited, or None when a header is awaited.
        self._header: tuple[int, int, int, int] | None = None
        # Payload bytes of an oversized frame still to be thrown away.
        self._discard = 0

    def feed(self, data: bytes) -> None:
        """Append received bytes. Bytes of an oversized payload are dropped, not buffered."""
        view = memoryview(data)
        if self._discard and self._pos == len(self._buf):
            skip = min(self._discard, len(view))
            self._discard -= skip
            view = view[skip:]
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += view

    @property
    def at_boundary(self) -> bool:
        """True when no partial frame is buffered or being discarded (a clean place for EOF)."""
        return self._header is None and not self._discard and self._pos == len(self._buf)

    def __iter__(self) -> Iterator[Event]:
        while (event := self.next_event()) is not None:
            yield event

    def next_event(self) -> Event | None:
        """Return the next complete event, or None when more bytes are needed."""
        if self._discard:
            skip = min(self._discard, len(self._buf) - self._pos)
            self._discard -= skip
            self._pos += skip
            if self._discard:
                self._compact()
                return None
        if self._header is None:
            if len(self._buf) - self._pos < HEADER_SIZE:
                self._compact()
                return None
            header = _HEADER.unpack_from(self._buf, self._pos)
            self._pos += HEADER_SIZE
            length, stream_id, message_type, flags = header
            if length > MAX_MESSAGE:
                self._discard = length
                return Oversized(stream_id, message_type, flags, length)
            self._header = header
        length, stream_id, message_type, flags = self._header
        if len(self._buf) - self._pos < length:
            self._compact()
            return None
        payload = bytes(self._buf[self._pos : self._pos + length])
        self._pos += length
        self._header = None
        return Frame(stream_id, message_type, flags, payload)

    def _compact(self) -> None:
        """Drop consumed bytes so the buffer holds at most one partial frame."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
