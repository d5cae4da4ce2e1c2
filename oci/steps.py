"""Timed steps of a workload process, sent to the shim server, which turns them into spans.

A workload (Wasm child, Linux init) cannot export spans itself: it may sit in a new network
namespace (no route to the collector), after ``pivot_root`` (no certificates), or be replaced
by ``execve`` a moment later, and importing the OpenTelemetry SDK there would cost every start.
So it only records steps, stdlib only, and writes each one as a JSON line to the ``trace`` fd
the shim passed (a stream socket, close-on-exec; sent with MSG_NOSIGNAL so a vanished server
cannot kill the workload with SIGPIPE) as soon as the step ends:

    {"id": 2, "parent": 1, "name": "wasm.compile", "start": <ns>, "end": <ns>,
     "attrs": {"runwasm.wasm.cache.hit": false}, "error": null}

``id``/``parent`` are local to the process (``parent`` null: a child of the RPC span the
process was spawned under); times are ``time.time_ns()``. The server reads the pipe until EOF
(process exit or ``execve``) and creates the spans (``runwasm.shim.common.spanpipe``). Without a
``trace`` fd (tracing off) every call here is a no-op that allocates nothing.

Two uses, told apart by ``install``'s ``spans``: with tracing on the steps become spans, and
``traced()`` is true: a Wasm task then runs where its runtime's steps (``wasm.instantiate``,
``wasm.run``) can be recorded. With only the debug log or the metrics on, the steps feed those
(compile cache hits and misses, step times) and the task takes its usual route: a log level
must not change how a container runs, nor cost it wasmtime-py.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CACHE_HIT_ATTR = "runwasm.wasm.cache.hit"
"""A step attribute: true when nothing was compiled (counted as a compile cache lookup)."""

_fd: int | None = None
_spans = False
_stack: list[int] = []
_next = 1


def install(fd: int | None, spans: bool = True) -> None:
    """Send steps to ``fd`` (None: record nothing). Called once in the workload process.
    ``spans``: the server makes spans of them (tracing on), not only log lines and metrics."""
    global _fd, _next, _spans
    _fd = fd
    _spans = fd is not None and spans
    _stack.clear()
    _next = 1


def active() -> bool:
    """Steps are recorded (tracing, metrics or the debug log wants them)."""
    return _fd is not None


def traced() -> bool:
    """Steps are recorded and become spans: the workload is traced."""
    return _fd is not None and _spans


def _write(record: dict[str, Any]) -> None:
    global _fd
    if _fd is None:
        return
    data = (json.dumps(record, default=str) + "\n").encode()
    try:
        try:
            sock = socket.socket(fileno=_fd)
        except OSError:  # not a socket (a file, in the CLI): plain writes
            while data:
                data = data[os.write(_fd, data):]
            return
        try:
            sock.sendall(data, socket.MSG_NOSIGNAL)  # the server gone must not SIGPIPE the workload
        finally:
            sock.detach()
    except OSError:
        _fd = None  # the server is gone: stop recording, never fail the workload for it


@contextmanager
def step(name: str, **attrs: Any) -> Iterator[dict[str, Any]]:
    """Time the block as one step; the yielded dict takes more attributes. An exception leaving
    the block marks the step failed (its text is the span's status) and propagates."""
    global _next
    if _fd is None:
        yield attrs
        return
    sid, _next = _next, _next + 1
    parent = _stack[-1] if _stack else None
    _stack.append(sid)
    start = time.time_ns()
    error: str | None = None
    try:
        yield attrs
    except BaseException as err:
        error = f"{type(err).__name__}: {err}"
        raise
    finally:
        _stack.pop()
        _write({"id": sid, "parent": parent, "name": name, "start": start, "end": time.time_ns(),
                "attrs": attrs, "error": error})


def point(name: str, **attrs: Any) -> None:
    """A step that ends as it begins, e.g. ``linux.exec`` right before ``execve``."""
    with step(name, **attrs):
        pass
