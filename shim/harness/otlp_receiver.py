"""A small in-process OTLP receiver (http/protobuf) and a terminal waterfall of what it got.

``runwasm run --trace`` starts one on 127.0.0.1, points the shim at it with the standard
``OTEL_EXPORTER_OTLP_ENDPOINT``/``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``, and prints the
span tree of its one run; no collector is needed. The tests use the same ``Collected`` store
behind a gRPC receiver too (``tests/otlp.py``).

Spec facts used (OTLP/HTTP): ``POST /v1/traces`` and ``/v1/metrics`` with an
``application/x-protobuf`` body (optionally ``Content-Encoding: gzip``) holding an
``ExportTraceServiceRequest``/``ExportMetricsServiceRequest``; the answer is the matching
``Export*ServiceResponse`` with status 200.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One received span, flattened (ids as lower-case hex)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]

    @property
    def error(self) -> bool:
        return self.status_code == STATUS_ERROR


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which is None or which == "kvlist_value":
        return None
    return getattr(v, which)


def _attrs(kvs: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def flatten_traces(req: Any) -> list[SpanRecord]:
    """The spans of an ``ExportTraceServiceRequest``."""
    out = []
    for rs in req.resource_spans:
        service = str(_attrs(rs.resource.attributes).get("service.name", ""))
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(SpanRecord(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name, service,
                                      s.kind, s.start_time_unix_nano, s.end_time_unix_nano, s.status.code,
                                      s.status.message, _attrs(s.attributes)))
    return out


def metric_names(req: Any) -> list[tuple[str, str]]:
    """(service.name, metric name) of an ``ExportMetricsServiceRequest``."""
    out: list[tuple[str, str]] = []
    for rm in req.resource_metrics:
        service = str(_attrs(rm.resource.attributes).get("service.name", ""))
        for sm in rm.scope_metrics:
            out.extend((service, m.name) for m in sm.metrics)
    return out


@dataclass
class Collected:
    """What a receiver got; thread-safe."""

    spans: list[SpanRecord] = field(default_factory=list)
    metrics: list[tuple[str, str]] = field(default_factory=list)
    metric_requests: list[Any] = field(default_factory=list)
    requests: int = 0
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def add_traces(self, req: Any) -> None:
        with self._lock:
            self.spans.extend(flatten_traces(req))
            self.requests += 1
            self._lock.notify_all()

    def add_metrics(self, req: Any) -> None:
        with self._lock:
            self.metrics.extend(metric_names(req))
            self.metric_requests.append(req)
            self.requests += 1
            self._lock.notify_all()

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Block until ``predicate(self)`` holds (True) or ``timeout`` seconds pass (False)."""
        with self._lock:
            return bool(self._lock.wait_for(lambda: predicate(self), timeout))


class HttpReceiver:
    """OTLP/HTTP protobuf receiver on 127.0.0.1 (an ephemeral port) in a daemon thread."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as msvc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tsvc

        self.collected = Collected()
        collected = self.collected

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding", "") == "gzip":
                    body = gzip.decompress(body)
                try:
                    if self.path == "/v1/traces":
                        collected.add_traces(tsvc.ExportTraceServiceRequest.FromString(body))
                        reply = tsvc.ExportTraceServiceResponse().SerializeToString()
                    elif self.path == "/v1/metrics":
                        collected.add_metrics(msvc.ExportMetricsServiceRequest.FromString(body))
                        reply = msvc.ExportMetricsServiceResponse().SerializeToString()
                    else:
                        self.send_error(404, f"no OTLP signal at {self.path}")
                        return
                except Exception as err:  # noqa: BLE001 - a bad body is the client's problem
                    self.send_error(400, f"bad OTLP body: {err}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-http", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """The standard environment that points an OTLP exporter here."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}

    def __enter__(self) -> HttpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


_SHOWN = {"process.exit.code": "exit_code", "runwasm.wasm.cache.hit": "cache_hit",
          "rpc.grpc.status_code": "code", "runwasm.rootfs.method": "rootfs"}


def waterfall(spans: Sequence[SpanRecord], width: int = 30) -> str:
    """The span tree as an indented waterfall: offset, duration, a bar, name, service, status.

    A span whose parent is not among ``spans`` is a root (e.g. containerd's own, when only the
    shim's arrived). Children are ordered by start time."""
    if not spans:
        return "(no spans received)"
    ids = {s.span_id for s in spans}
    children: dict[str, list[SpanRecord]] = {}
    roots: list[SpanRecord] = []
    for s in spans:
        if s.parent_span_id and s.parent_span_id in ids:
            children.setdefault(s.parent_span_id, []).append(s)
        else:
            roots.append(s)
    t0 = min(s.start_ns for s in spans)
    total = max(max(s.end_ns for s in spans) - t0, 1)
    lines = [f"{'start':>9} {'duration':>10}  {'':{width}}  span"]

    def walk(s: SpanRecord, depth: int) -> None:
        a = (s.start_ns - t0) * width // total
        b = max(a + 1, (s.end_ns - t0) * width // total)
        bar = " " * a + "█" * (b - a) + " " * (width - b)
        status = f"  ERROR: {s.status_message}" if s.error else ""
        extra = [f"{label}={s.attributes[key]}" for key, label in _SHOWN.items() if key in s.attributes]
        lines.append(f"{(s.start_ns - t0) / 1e6:8.1f}ms {(s.end_ns - s.start_ns) / 1e6:8.1f}ms  {bar}  "
                     f"{'  ' * depth}{s.name} [{s.service}]{' ' + ' '.join(extra) if extra else ''}{status}")
        for c in sorted(children.get(s.span_id, []), key=lambda x: x.start_ns):
            walk(c, depth + 1)

    for r in sorted(roots, key=lambda x: x.start_ns):
        walk(r, 0)
    return "\n".join(lines)
