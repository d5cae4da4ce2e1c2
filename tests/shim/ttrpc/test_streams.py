"""Server stream-id rules, as a table of (events so far, event, verdict)."""

from __future__ import annotations

import pytest

from runwasm.shim.ttrpc.frame import MAX_MESSAGE, Event, Frame, MessageType, Oversized
from runwasm.shim.ttrpc.status import Code
from runwasm.shim.ttrpc.streams import Dispatch, Reject, ServerStreams, Verdict

REQ, RESP, DATA = MessageType.REQUEST, MessageType.RESPONSE, MessageType.DATA
ODD = "StreamID must be odd for client initiated streams"
REUSE = "StreamID cannot be re-used and must increment"
INACTIVE = "StreamID is no longer active"
OVER = MAX_MESSAGE + 1

CASES: list[tuple[str, list[Event], Event, Verdict]] = [
    ("first request", [], Frame(1, REQ, 0, b"r"), Dispatch(1, b"r")),
    ("ids may skip", [Frame(1, REQ, 0, b"")], Frame(7, REQ, 0, b""), Dispatch(7, b"")),
    ("even id", [], Frame(2, REQ, 0, b""), Reject(2, Code.INVALID_ARGUMENT, ODD)),
    ("id zero", [], Frame(0, REQ, 0, b""), Reject(0, Code.INVALID_ARGUMENT, ODD)),
    ("even id on data", [], Frame(4, DATA, 0, b""), Reject(4, Code.INVALID_ARGUMENT, ODD)),
    ("even id on unknown type", [], Frame(4, 9, 0, b""), Reject(4, Code.INVALID_ARGUMENT, ODD)),
    ("re-used id", [Frame(3, REQ, 0, b"")], Frame(3, REQ, 0, b""), Reject(3, Code.INVALID_ARGUMENT, REUSE)),
    ("lower id", [Frame(5, REQ, 0, b"")], Frame(3, REQ, 0, b""), Reject(3, Code.INVALID_ARGUMENT, REUSE)),
    ("data, never seen", [], Frame(1, DATA, 0, b"x"), Reject(1, Code.INVALID_ARGUMENT, INACTIVE)),
    ("data, in flight", [Frame(1, REQ, 0, b"")], Frame(1, DATA, 0, b"x"), None),
    ("response from client", [], Frame(1, RESP, 0, b""), None),
    ("unknown type", [], Frame(1, 42, 0, b""), None),
    ("oversized", [], Oversized(5, REQ, 0, OVER), Reject(5, Code.RESOURCE_EXHAUSTED,
                                                          f"message length {OVER} exceed maximum message size of 4194304")),
    ("oversized even id", [], Oversized(2, REQ, 0, OVER), Reject(2, Code.RESOURCE_EXHAUSTED,
                                                                 f"message length {OVER} exceed maximum message size of 4194304")),
    ("oversized does not use the id", [Oversized(5, REQ, 0, OVER)], Frame(5, REQ, 0, b""), Dispatch(5, b"")),
    ("ignored frames do not use the id", [Frame(9, 42, 0, b"")], Frame(3, REQ, 0, b""), Dispatch(3, b"")),
]


@pytest.mark.parametrize(("before", "event", "verdict"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rules(before: list[Event], event: Event, verdict: Verdict) -> None:
    streams = ServerStreams()
    for earlier in before:
        streams.classify(earlier)
    assert streams.classify(event) == verdict


def test_data_after_finish_is_inactive() -> None:
    streams = ServerStreams()
    assert streams.classify(Frame(1, REQ, 0, b"")) == Dispatch(1, b"")
    assert streams.active == {1}
    streams.finish(1)
    assert streams.active == frozenset()
    assert streams.classify(Frame(1, DATA, 0, b"")) == Reject(1, Code.INVALID_ARGUMENT, INACTIVE)
    # A finished id still counts as used.
    assert streams.classify(Frame(1, REQ, 0, b"")) == Reject(1, Code.INVALID_ARGUMENT, REUSE)
