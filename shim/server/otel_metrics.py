"""OpenTelemetry metrics of the shim server, exported over OTLP when ``OTEL_*`` configures them.

Instruments (all no-ops, nothing imported, until ``setup`` ran with ``config.metrics``):

- ``runwasm.task.start.duration`` (histogram, s, ``runwasm.executor``): Create received to the
  init process started (Start answered), per container;
- ``runwasm.tasks.live`` (up-down counter, ``runwasm.executor``): containers hosted;
- ``runwasm.wasm.compile_cache.lookups`` (counter, ``runwasm.cache.result`` = hit|miss; the
  workload's lookups in wasmtime-py's cache and in the CLI artifacts', ``runwasm.wasm.cli_cache``);
- ``runwasm.events.publish.retries`` / ``runwasm.events.publish.drops`` (counters, ``topic``);
- ``rpc.server.duration`` (histogram, ms, ``rpc.system``/``rpc.service``/``rpc.method``, as the
  RPC semantic conventions name it).

(Not the cgroup ``Stats`` of a task: those are ``runwasm.shim.server.metrics``.)
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from runwasm.shim.common.otel_env import OtelConfig

log = logging.getLogger(__name__)

_provider: Any = None
_inst: dict[str, Any] = {}
_created: dict[str, int] = {}  # container id -> Create start (monotonic ns)


def active() -> bool:
    return _provider is not None


def setup(config: OtelConfig) -> None:
    """Install the meter provider (a periodic OTLP reader) when ``config.metrics``."""
    global _provider
    if not config.metrics:
        return
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from runwasm.shim.common.tracing import resource

    exporter = _lazy_exporter(config.metrics_protocol)
    _provider = MeterProvider(resource=resource(config), metric_readers=[PeriodicExportingMetricReader(exporter)])
    metrics.set_meter_provider(_provider)
    meter = _provider.get_meter("runwasm.shim")
    _inst.update(
        start=meter.create_histogram("runwasm.task.start.duration", unit="s",
                                     description="Create received to the task's init process started"),
        live=meter.create_up_down_counter("runwasm.tasks.live", unit="{task}", description="containers hosted"),
        cache=meter.create_counter("runwasm.wasm.compile_cache.lookups", unit="{lookup}",
                                   description="compile cache lookups by result"),
        retries=meter.create_counter("runwasm.events.publish.retries", unit="{attempt}",
                                     description="Events.Forward attempts retried"),
        drops=meter.create_counter("runwasm.events.publish.drops", unit="{event}",
                                   description="events dropped (queue full, rejected, undelivered at exit)"),
        rpc=meter.create_histogram("rpc.server.duration", unit="ms", description="ttrpc server call duration"),
    )


def _exporter(protocol: str) -> Any:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http()


def _lazy_exporter(protocol: str) -> Any:
    """The OTLP metric exporter, built on its first export (in the reader's thread) like the span
    exporter (``tracing._lazy_exporter``). It reports the OTLP exporter's defaults (cumulative,
    default aggregation); when the environment asks for others the real one is built now."""
    import threading

    from opentelemetry.sdk.metrics.export import MetricExporter

    if os.environ.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE") or \
            os.environ.get("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION"):
        return _exporter(protocol)

    class LazyExporter(MetricExporter):
        def __init__(self) -> None:
            super().__init__()
            self._real: Any = None
            self._lock = threading.Lock()

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            with self._lock:
                if self._real is None:
                    self._real = _exporter(protocol)
            return self._real.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return self._real is None or bool(self._real.force_flush(timeout_millis))

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            if self._real is not None:
                self._real.shutdown(timeout_millis=timeout_millis, **kwargs)

    return LazyExporter()


def shutdown() -> None:
    """Export the last values (the server calls it on exit)."""
    global _provider
    if _provider is not None:
        try:
            _provider.shutdown()
        except Exception:  # noqa: BLE001 - never fail the exit for telemetry
            log.warning("flushing metrics at exit failed", exc_info=True)
    _provider = None
    _inst.clear()


def rpc_duration(service: str, method: str, seconds: float, code_name: str) -> None:
    if _inst:
        _inst["rpc"].record(seconds * 1000.0, {"rpc.system": "ttrpc", "rpc.service": service, "rpc.method": method,
                                               "rpc.ttrpc.status": code_name})


def task_created(cid: str, executor: str, started_ns: int) -> None:
    if _inst:
        _created[cid] = started_ns
        _inst["live"].add(1, {"runwasm.executor": executor})


def task_started(cid: str, executor: str) -> None:
    began = _created.pop(cid, None)
    if _inst and began is not None:
        _inst["start"].record((time.monotonic_ns() - began) / 1e9, {"runwasm.executor": executor})


def task_deleted(cid: str, executor: str) -> None:
    _created.pop(cid, None)
    if _inst:
        _inst["live"].add(-1, {"runwasm.executor": executor})


def cache_lookup(hit: bool) -> None:
    if _inst:
        _inst["cache"].add(1, {"runwasm.cache.result": "hit" if hit else "miss"})


def publish_retry(topic: str) -> None:
    if _inst:
        _inst["retries"].add(1, {"topic": topic})


def publish_drop(topic: str, count: int = 1) -> None:
    if _inst:
        _inst["drops"].add(count, {"topic": topic})
