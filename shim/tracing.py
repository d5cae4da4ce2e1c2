"""Trace context from ttrpc metadata: log correlation always, OpenTelemetry spans when enabled.

containerd sends W3C ``traceparent`` (plus ``tracestate``/``baggage``) in ttrpc
``Request.metadata`` when its own tracing is on (shim-protocol.md §15). For every RPC:

- the trace id goes into a context variable that the log formatter prints as
  ``trace_id=<32 hex>`` (the same field containerd's ``log_trace_id`` adds), so shim and daemon
  log lines correlate even when no exporter is configured;
- when the environment enables an OTLP exporter (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, and not ``OTEL_SDK_DISABLED=true``) a server span
  ``<service>/<method>`` is started as a child of the caller's span; the SDK is imported only
  then. ``outgoing()`` returns the metadata to inject into the events the RPC causes.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")
_carrier_var: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("trace_carrier", default=None)
_tracer: Any = None
_enabled: bool | None = None


def parse_traceparent(value: str) -> str:
    """The trace id of a valid W3C traceparent, else ""."""
    m = _TRACEPARENT.match(value.strip().lower())
    if not m or m.group(1) == "0" * 32:
        return ""
    return m.group(1)


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup(service_name: str) -> None:
    """Install the OTel SDK tracer provider if enabled (server start-up; imports are lazy)."""
    global _tracer, _enabled
    _enabled = enabled()
    if not _enabled:
        return
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as err:
        log.warning("tracing requested by OTEL_* but the SDK is missing: %s", err)
        _enabled = False
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    except ImportError:
        log.warning("OTLP exporter not installed (pip install 'runwasm[otlp]'): spans are not exported")
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("runwasm.shim")


@contextmanager
def rpc_span(service: str, method: str, metadata: Mapping[str, Sequence[str]], task_id: str,
             namespace: str) -> Iterator[None]:
    carrier = {k: v[0] for k, v in metadata.items() if k in ("traceparent", "tracestate", "baggage") and v}
    token_id = trace_id_var.set(parse_traceparent(carrier.get("traceparent", "")))
    token_carrier = _carrier_var.set(carrier)
    try:
        if _tracer is None:
            yield
            return
        from opentelemetry import propagate, trace

        ctx = propagate.extract(carrier)
        with _tracer.start_as_current_span(f"{service}/{method}", context=ctx, kind=trace.SpanKind.SERVER,
                                           attributes={"rpc.system": "ttrpc", "rpc.service": service,
                                                       "rpc.method": method, "containerd.id": task_id,
                                                       "containerd.namespace": namespace}):
            out: dict[str, str] = {}
            propagate.inject(out)
            _carrier_var.set(out or carrier)
            yield
    finally:
        trace_id_var.reset(token_id)
        _carrier_var.reset(token_carrier)


def outgoing() -> dict[str, str]:
    """Trace metadata to attach to calls made on behalf of the current RPC."""
    return dict(_carrier_var.get() or {})


class TraceIdFilter(logging.Filter):
    """Adds ``record.trace_id`` (possibly empty) for the log formatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = trace_id_var.get()
        return True
