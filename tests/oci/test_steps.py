"""Workload steps: JSON lines on the trace fd, nested ids, errors recorded, no-op without a fd."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from runwasm.oci import steps


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    steps.install(None)
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def _records(r: int, w: int) -> list[dict[str, object]]:
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_nested_steps_are_written_as_they_end(pipe: tuple[int, int]) -> None:
    r, w = pipe
    steps.install(w)
    with steps.step("outer", a=1) as attrs:
        with steps.step("inner"):
            pass
        attrs["b"] = True
    with pytest.raises(ValueError, match="bad"), steps.step("fails"):
        raise ValueError("bad")
    steps.point("exec", path="/bin/sh")
    steps.install(None)
    recs = _records(r, w)
    assert [(x["name"], x["id"], x["parent"]) for x in recs] == [
        ("inner", 2, 1), ("outer", 1, None), ("fails", 3, None), ("exec", 4, None)]
    assert recs[1]["attrs"] == {"a": 1, "b": True}
    assert recs[2]["error"] == "ValueError: bad"
    assert all(int(str(x["start"])) <= int(str(x["end"])) for x in recs)


def test_without_fd_nothing_is_recorded() -> None:
    steps.install(None)
    assert not steps.active()
    with steps.step("x", k=1) as attrs:
        assert attrs == {"k": 1}


def test_a_closed_reader_stops_recording_without_a_sigpipe() -> None:
    """In a workload SIGPIPE has its default action (death): the write must not raise it."""
    import signal
    import socket

    a, b = socket.socketpair()
    b.close()
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        steps.install(a.fileno())
        with steps.step("one"):
            pass
        os._exit(0 if not steps.active() else 3)
    a.close()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_steps_for_the_log_or_metrics_only_are_not_traced(pipe: tuple[int, int]) -> None:
    """``spans=False`` (the server's ``steps`` fd: debug log or metrics, no tracing): recorded,
    but ``traced()`` is false, so the task keeps its route (``runwasm.wasm.fast_min``)."""
    r, w = pipe
    steps.install(w, spans=False)
    assert steps.active()
    assert not steps.traced()
    steps.point("x")
    steps.install(w)
    assert steps.active()
    assert steps.traced()
    steps.install(None, spans=True)
    assert not steps.active()
    assert not steps.traced()
    assert [x["name"] for x in _records(r, w)] == ["x"]
