"""Logging for the shim server: logfmt lines on the bundle's ``log`` FIFO.

containerd copies ``<bundle>/log`` byte for byte into its own log (shim-protocol.md §16), so
lines follow its shape: ``time="…" level=info msg="…" runtime=io.containerd.runwasm.v1
namespace=… id=… [trace_id=… [span_id=…]]``. Writes never block and never raise: while containerd is down
the FIFO has no reader (EPIPE) or is full (EAGAIN), and those lines are dropped.
"""

from __future__ import annotations

import datetime
import logging
import os

from runwasm.shim.common.naming import RUNTIME_NAME
from runwasm.shim.common.tracing import TraceIdFilter


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class LogfmtFormatter(logging.Formatter):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self._fields = " ".join(f"{k}={v}" for k, v in fields.items() if v)

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="microseconds")
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        level = {"WARNING": "warning", "CRITICAL": "fatal"}.get(record.levelname, record.levelname.lower())
        line = f'time="{ts.replace("+00:00", "Z")}" level={level} msg={_quote(msg)} {self._fields}'
        trace_id = getattr(record, "trace_id", "")
        if trace_id:
            line += f" trace_id={trace_id}"
            span_id = getattr(record, "span_id", "")
            if span_id:
                line += f" span_id={span_id}"
        return line


class FdHandler(logging.Handler):
    """Write each record with one os.write on a non-blocking fd; drop it on any error."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            os.write(self.fd, (self.format(record) + "\n").encode("utf-8", "replace"))
        except Exception:  # noqa: BLE001 - logging must never take the shim down
            pass


def open_log_fifo(bundle: str) -> int:
    """Open ``<bundle>/log`` for writing without blocking; -1 when it cannot be opened."""
    try:
        return os.open(os.path.join(bundle, "log"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return -1


def lean_records() -> None:
    """Records of this process carry no caller, thread or process fields: the logfmt lines use
    none of them, and filling them is half of what a record costs (``findCaller``'s walk of the
    stack, the thread's and process's names; ~24 -> ~12 us a record, measured in a loop)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def setup(fd: int, *, debug: bool, namespace: str, container_id: str) -> None:
    lean_records()
    root = logging.getLogger()
    root.handlers.clear()
    handler = FdHandler(fd)
    handler.setFormatter(LogfmtFormatter({"runtime": RUNTIME_NAME, "namespace": namespace,
                                          "id": container_id}))
    handler.addFilter(TraceIdFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.raiseExceptions = False
