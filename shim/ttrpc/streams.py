"""Sans-I/O stream bookkeeping for the server side of one ttrpc connection.

Stdlib only. :class:`ServerStreams` turns each decoded event into a verdict: run a new request
(:class:`Dispatch`), answer the stream with an error status (:class:`Reject`), or ignore it
(``None``). The asyncio server only executes verdicts.

Rules, checked in this order (Go ttrpc ``server.go`` behaviour):

1. An :class:`~runwasm.shim.ttrpc.frame.Oversized` frame is rejected with RESOURCE_EXHAUSTED on
   its stream id, whatever its type; it does not consume the stream id.
2. Any frame with an even stream id is rejected with INVALID_ARGUMENT
   "StreamID must be odd for client initiated streams" (even ids belong to the server).
3. A Data frame is never delivered: this implementation serves unary methods only. On a stream
   that is not in flight it is rejected with INVALID_ARGUMENT "StreamID is no longer active"; on
   a stream whose unary request is still running it is logged and dropped, so that stream still
   gets exactly one Response (the handler's).
4. Frames of any other type except Request (including Response, which only a server sends) are
   ignored, for forward compatibility.
5. A Request whose id is not greater than every id seen before on this connection is rejected
   with INVALID_ARGUMENT "StreamID cannot be re-used and must increment". Otherwise the id becomes
   the last one seen and the stream is in flight until :meth:`ServerStreams.finish`.

Request flags are not interpreted: every request is treated as unary.
"""

from __future__ import annotations

import dataclasses
import logging

from runwasm.shim.ttrpc.frame import Event, Frame, MessageType, Oversized, oversized_text
from runwasm.shim.ttrpc.status import Code

__all__ = ["Dispatch", "Reject", "ServerStreams", "Verdict"]

log = logging.getLogger(__name__)

ODD_MESSAGE = "StreamID must be odd for client initiated streams"
INCREMENT_MESSAGE = "StreamID cannot be re-used and must increment"
INACTIVE_MESSAGE = "StreamID is no longer active"


@dataclasses.dataclass(frozen=True, slots=True)
class Dispatch:
    """A new request on ``stream_id``: decode ``payload`` as ``ttrpc.Request`` and run it."""

    stream_id: int
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Reject:
    """Answer ``stream_id`` with a Response carrying this error status and no payload."""

    stream_id: int
    code: Code
    message: str


Verdict = Dispatch | Reject | None


class ServerStreams:
    """Stream-id state of one server connection: the last request id and the ids in flight."""

    __slots__ = ("_last_id", "_active")

    def __init__(self) -> None:
        self._last_id = 0
        self._active: set[int] = set()

    @property
    def active(self) -> frozenset[int]:
        """Stream ids whose request was dispatched and not yet finished."""
        return frozenset(self._active)

    def classify(self, event: Event) -> Verdict:
        """Apply the module's rules to one decoded event; a Dispatch marks its stream in flight."""
        if isinstance(event, Oversized):
            return Reject(event.stream_id, Code.RESOURCE_EXHAUSTED, oversized_text(event.length))
        frame: Frame = event
        if frame.stream_id % 2 != 1:
            return Reject(frame.stream_id, Code.INVALID_ARGUMENT, ODD_MESSAGE)
        if frame.type == MessageType.DATA:
            if frame.stream_id in self._active:
                log.debug("ttrpc: dropped a data frame on unary stream %d", frame.stream_id)
                return None
            return Reject(frame.stream_id, Code.INVALID_ARGUMENT, INACTIVE_MESSAGE)
        if frame.type != MessageType.REQUEST:
            log.debug("ttrpc: ignored a frame of type %d on stream %d", frame.type, frame.stream_id)
            return None
        if frame.stream_id <= self._last_id:
            return Reject(frame.stream_id, Code.INVALID_ARGUMENT, INCREMENT_MESSAGE)
        self._last_id = frame.stream_id
        self._active.add(frame.stream_id)
        return Dispatch(frame.stream_id, frame.payload)

    def finish(self, stream_id: int) -> None:
        """Mark a dispatched stream as answered (or abandoned); unknown ids are ignored."""
        self._active.discard(stream_id)
