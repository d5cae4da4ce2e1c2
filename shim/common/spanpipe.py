"""Server side of ``runwasm.oci.steps``: read a workload's steps and turn them into spans.

``open_pipe()`` is called right before a spawn while OTEL_* is configured or the log is at debug
level; one end of a stream socket pair goes to the workload (named ``trace`` when tracing is on,
``steps`` when only the metrics or the debug log want them: ``runwasm.oci.steps.traced``), ours
is drained on the event loop. At EOF (the process exited or called ``execve``) with tracing on,
every step becomes a span, children of the span current at spawn time (the Create/Exec RPC),
with the workload's own timestamps. Steps also feed the metrics (compile cache hits/misses: the
wasmtime-py cache's, ``wasm.compile``, and the CLI artifacts', ``wasm.cli_artifact``) and the
debug log (cache hit or miss, per step).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from typing import Any

from runwasm.oci.steps import CACHE_HIT_ATTR
from runwasm.shim.common import tracing
from runwasm.shim.server import otel_metrics

log = logging.getLogger(__name__)

MAX_BYTES = 1 << 20  # a workload that writes more than this is not sending steps: stop reading


def open_pipe(what: str) -> int | None:
    """A channel for one workload's steps: returns the workload's end (the caller closes it after
    the spawn), or None when neither OTEL_* nor debug logging wants them. Must be called inside
    the RPC's trace context."""
    if not (tracing.active() or otel_metrics.active() or log.isEnabledFor(logging.DEBUG)):
        return None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)  # close-on-exec both
    ours.shutdown(socket.SHUT_WR)
    r, w = ours.detach(), theirs.detach()
    os.set_blocking(r, False)
    parent = _current_context() if tracing.active() else None
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    size = 0

    def on_readable() -> None:
        nonlocal size
        try:
            data = os.read(r, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data and size + len(data) <= MAX_BYTES:
            chunks.append(data)
            size += len(data)
            return
        loop.remove_reader(r)
        os.close(r)
        if data:
            log.warning("%s: too much trace data from the workload; its spans are dropped", what)
            return
        emit(b"".join(chunks), parent, what)

    loop.add_reader(r, on_readable)
    return w


def _current_context() -> Any:
    from opentelemetry import context

    return context.get_current()


def parse(data: bytes) -> list[dict[str, Any]]:
    """The step records of ``data``; a malformed line is skipped (logged)."""
    out: list[dict[str, Any]] = []
    for line in data.splitlines():
        try:
            rec = json.loads(line)
            if isinstance(rec, dict) and isinstance(rec.get("id"), int) and isinstance(rec.get("name"), str):
                out.append(rec)
        except ValueError:
            log.debug("skipping a malformed step record %r", line[:200])
    return out


def emit(data: bytes, parent: Any, what: str) -> None:
    """Create the spans of a finished workload's steps (parents before children); without
    tracing only the metrics and the debug log are fed."""
    records = parse(data)
    for rec in records:
        hit = (rec.get("attrs") or {}).get(CACHE_HIT_ATTR)
        if isinstance(hit, bool):
            otel_metrics.cache_lookup(hit)
            log.debug("%s: compile cache %s", what, "hit" if hit else "miss")
        log.debug("%s: step %s took %.3f ms%s", what, rec["name"],
                  (int(rec.get("end", 0)) - int(rec.get("start", 0))) / 1e6,
                  f" (failed: {rec['error']})" if rec.get("error") else "")
    if not tracing.active():
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    by_id = {rec["id"]: rec for rec in records}
    made: dict[int, Any] = {}
    tracer = trace.get_tracer("runwasm.workload")

    def make(rec: dict[str, Any]) -> Any:
        if rec["id"] in made:
            return made[rec["id"]]
        made[rec["id"]] = None  # a cycle in bad data ends here
        ctx = parent
        up = by_id.get(rec.get("parent"))
        if up is not None and (parent_span := make(up)) is not None:
            ctx = trace.set_span_in_context(parent_span, parent)
        attrs = {str(k): v for k, v in (rec.get("attrs") or {}).items() if isinstance(v, str | int | float | bool)}
        sp = tracer.start_span(rec["name"], context=ctx, start_time=int(rec.get("start", 0)) or None,
                               attributes=attrs)
        if rec.get("error"):
            sp.set_status(Status(StatusCode.ERROR, str(rec["error"])))
        made[rec["id"]] = sp
        return sp

    for rec in records:
        make(rec)
    for rec in records:  # end children first: they were recorded first
        sp = made.get(rec["id"])
        if sp is not None:
            sp.end(end_time=int(rec.get("end", 0)) or None)
