"""Trace context from ttrpc metadata: log correlation always, OpenTelemetry spans when configured.

containerd sends W3C ``traceparent`` (plus ``tracestate``/``baggage``) in ttrpc
``Request.metadata`` when its own tracing is on (shim-protocol.md §15). For every RPC:

- the trace id goes into a context variable that the log formatter prints as
  ``trace_id=<32 hex>`` (the field containerd's ``log_trace_id`` adds), also without an exporter;
- when ``OTEL_*`` configures traces (``runwasm.shim.common.otel_env``) the SDK is imported (only then)
  and a SERVER span ``<service>/<method>`` is started as a child of the caller's span, with
  ``rpc.system=ttrpc``, ``rpc.service``, ``rpc.method``, the container and exec ids and, on
  failure, ``rpc.grpc.status_code`` and an ERROR status. Logs then also carry ``span_id``.
- ``outgoing()`` is the metadata to inject into the calls the RPC causes (``Events.Forward``)
  and the context handed to the workload processes it spawns: our span's context when
  tracing is on, and nothing at all when it is off, so containerd is never told about a span
  that will not arrive.

The ``start`` -> server hand-off: ``start`` never imports the SDK; it passes its inherited
``TRACEPARENT``/``TRACESTATE``/``BAGGAGE`` (the environment carrier) and its timing in one
variable, ``RUNWASM_SHIM_TRACE`` (``handoff_env``); the server turns that into the
``shim.start`` span once it has set the SDK up (``adopt_handoff``).
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from runwasm.shim.common.otel_env import ENV_CARRIER, ENV_HANDOFF, OtelConfig, handoff_env, parse_traceparent

__all__ = ["ENV_CARRIER", "ENV_HANDOFF", "active", "adopt_handoff", "bind", "handoff_env", "outgoing",
           "parse_traceparent", "rpc_span", "setup", "shutdown", "span"]

log = logging.getLogger(__name__)

PROPAGATED = ("traceparent", "tracestate", "baggage")
trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")
_carrier_var: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("trace_carrier", default=None)
_tracer: Any = None
_provider: Any = None
_T = TypeVar("_T")


def active() -> bool:
    """The SDK is set up: spans are recorded and exported."""
    return _tracer is not None


def _exporter(protocol: str) -> Any:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def _lazy_exporter(protocol: str) -> Any:
    """A SpanExporter that imports and builds the OTLP exporter on its first use, which happens in
    the batch processor's thread: the exporter's import (requests or grpc, the encoders; about
    half of the SDK's start-up cost) stays off the path to the server's first RPC."""
    import threading

    from opentelemetry.sdk.trace.export import SpanExporter

    class LazyExporter(SpanExporter):
        def __init__(self) -> None:
            self._real: Any = None
            self._lock = threading.Lock()

        def _get(self) -> Any:
            with self._lock:
                if self._real is None:
                    self._real = _exporter(protocol)
                return self._real

        def export(self, spans: Any) -> Any:
            return self._get().export(spans)

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return self._real is None or bool(self._real.force_flush(timeout_millis))

        def shutdown(self) -> None:
            if self._real is not None:
                self._real.shutdown()

    return LazyExporter()


def resource(config: OtelConfig) -> Any:
    """The SDK Resource: ``OTEL_RESOURCE_ATTRIBUTES`` plus our ``service.name`` (see otel_env)."""
    from opentelemetry.sdk.resources import Resource

    from runwasm.shim.common.version import VERSION

    return Resource.create({"service.name": config.service_name, "service.version": VERSION})


def setup(config: OtelConfig) -> None:
    """Install the tracer provider when ``config.traces`` (server start-up; imports are lazy).

    Must run after the zygote is forked: the batch processor starts a thread."""
    global _tracer, _provider
    if not config.traces:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=resource(config))  # the sampler comes from OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(_lazy_exporter(config.traces_protocol)))
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = trace.get_tracer("runwasm.shim")


def shutdown() -> None:
    """Export what is buffered (bounded by the exporter's timeout); the server calls it on exit."""
    global _tracer, _provider
    if _provider is not None:
        try:
            _provider.shutdown()
        except Exception:  # noqa: BLE001 - never fail the exit for telemetry
            log.warning("flushing spans at exit failed", exc_info=True)
    _tracer = _provider = None


class RpcSpan:
    """Handle on the current RPC's span: ``fail(code, message)`` records an error status."""

    def __init__(self, span: Any) -> None:
        self.span = span

    def fail(self, code: int, code_name: str, message: str) -> None:
        if self.span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute("rpc.grpc.status_code", int(code))
        self.span.set_attribute("rpc.ttrpc.status", code_name)
        self.span.set_status(Status(StatusCode.ERROR, f"{code_name}: {message}"))


@contextmanager
def rpc_span(service: str, method: str, metadata: Mapping[str, Sequence[str]], task_id: str,
             namespace: str, exec_id: str = "") -> Iterator[RpcSpan]:
    """The server span of one RPC (see module doc); a no-op handle when tracing is off."""
    carrier = {k: v[0] for k, v in metadata.items() if k in PROPAGATED and v}
    token_id = trace_id_var.set(parse_traceparent(carrier.get("traceparent", "")))
    token_carrier = _carrier_var.set({})
    try:
        if _tracer is None:
            yield RpcSpan(None)
            return
        from opentelemetry import propagate, trace

        attrs = {"rpc.system": "ttrpc", "rpc.service": service, "rpc.method": method,
                 "containerd.namespace": namespace}
        if task_id:
            attrs["containerd.task.id"] = task_id
        if exec_id:
            attrs["containerd.exec.id"] = exec_id
        with _tracer.start_as_current_span(f"{service}/{method}", context=propagate.extract(carrier),
                                           kind=trace.SpanKind.SERVER, attributes=attrs,
                                           record_exception=False, set_status_on_exception=False) as span:
            out: dict[str, str] = {}
            propagate.inject(out)
            _carrier_var.set(out)
            trace_id_var.set(format(span.get_span_context().trace_id, "032x"))
            yield RpcSpan(span)
    finally:
        trace_id_var.reset(token_id)
        _carrier_var.reset(token_carrier)


@contextmanager
def span(name: str, **attrs: Any) -> Iterator[Any]:
    """An INTERNAL span in the server (image mount, ...); yields it, or None when tracing is off.
    An exception marks it ERROR and propagates."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import propagate

    with _tracer.start_as_current_span(name, attributes=attrs) as sp:
        out: dict[str, str] = {}
        propagate.inject(out)
        token = _carrier_var.set(out)
        try:
            yield sp
        finally:
            _carrier_var.reset(token)


def outgoing() -> dict[str, str]:
    """Trace metadata for calls made on behalf of the current RPC ({} when tracing is off)."""
    return dict(_carrier_var.get() or {})


def bind(fn: Callable[..., _T]) -> Callable[..., _T]:
    """``fn`` run later (a reaper callback) in the trace context current now: TaskExit is
    forwarded with the context of the RPC that spawned the process."""
    ctx = contextvars.copy_context()
    return lambda *args: ctx.run(fn, *args)


def current_span_id() -> str:
    if _tracer is None:
        return ""
    from opentelemetry import trace

    sc = trace.get_current_span().get_span_context()
    return format(sc.span_id, "016x") if sc.is_valid else ""


class TraceIdFilter(logging.Filter):
    """Adds ``record.trace_id`` and ``record.span_id`` (possibly empty) for the log formatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace_id = trace_id_var.get()
        record.trace_id = trace_id
        record.span_id = current_span_id() if trace_id else ""
        return True


# --- start -> server hand-off (start's half is otel_env.handoff_env: no logging import there) ----

def adopt_handoff(raw: str, server_started_ns: int) -> None:
    """In the server, after ``setup``: record ``shim.start`` and ``shim.server.init`` under the
    carrier ``start`` inherited; ``raw`` is the ``RUNWASM_SHIM_TRACE`` value (popped from the
    environment before the zygote forks, so no workload inherits it)."""
    if not raw or _tracer is None:
        return
    try:
        doc = json.loads(raw)
        carrier = {str(k): str(v) for k, v in doc["carrier"].items()}
        start_ns, spawn_ns = int(doc["start_ns"]), int(doc["spawn_ns"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        log.warning("ignoring a malformed %s: %s", ENV_HANDOFF, err)
        return
    from opentelemetry import propagate

    parent = propagate.extract(carrier)
    sp = _tracer.start_span("shim.start", context=parent, start_time=start_ns)
    sp.end(end_time=spawn_ns)
    init = _tracer.start_span("shim.server.init", context=parent, start_time=server_started_ns)
    init.end()
