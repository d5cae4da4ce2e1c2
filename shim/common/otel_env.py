"""The OpenTelemetry configuration of the shim, read only from the standard ``OTEL_*`` environment.

Stdlib only: ``start``, ``delete`` and the server decide from this whether to import the SDK at
all. The shim inherits containerd's environment (shim-protocol.md §15), so:

- traces are on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
  is set and ``OTEL_SDK_DISABLED`` is not ``true`` (containerd's own rule); metrics likewise with
  ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``;
- ``OTEL_EXPORTER_OTLP_{TRACES_,METRICS_,}PROTOCOL`` picks ``grpc`` or ``http/protobuf``; the
  specification's default is ``http/protobuf``. ``http/json`` (and anything else) is refused
  with a precise error rather than silently replaced;
- ``service.name`` is ``OTEL_SERVICE_NAME``, else ``service.name`` from
  ``OTEL_RESOURCE_ATTRIBUTES``, else ``containerd-shim-runwasm``; a value of ``containerd`` is
  containerd's own name inherited from the daemon and is never used for the shim's spans;
- ``OTEL_TRACES_SAMPLER``/``_ARG``, the other ``OTEL_RESOURCE_ATTRIBUTES``, headers, timeouts
  and certificates are read by the SDK and the exporters themselves.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_SERVICE_NAME = "containerd-shim-runwasm"
CONTAINERD_SERVICE_NAMES = frozenset({"containerd"})
PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_PROTOCOL = "http/protobuf"
ENV_CARRIER = {"traceparent": "TRACEPARENT", "tracestate": "TRACESTATE", "baggage": "BAGGAGE"}
ENV_HANDOFF = "RUNWASM_SHIM_TRACE"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


class OtelConfigError(ValueError):
    """An ``OTEL_*`` variable holds a value the shim cannot honour."""


@dataclass(frozen=True, slots=True)
class OtelConfig:
    """What the environment asks for. ``traces``/``metrics`` False means: import nothing."""

    traces: bool = False
    metrics: bool = False
    traces_protocol: str = DEFAULT_PROTOCOL
    metrics_protocol: str = DEFAULT_PROTOCOL
    service_name: str = DEFAULT_SERVICE_NAME

    @property
    def any(self) -> bool:
        return self.traces or self.metrics


def _protocol(env: Mapping[str, str], signal: str) -> str:
    name = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
    value = env.get(name) or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or DEFAULT_PROTOCOL
    if value not in PROTOCOLS:
        src = name if env.get(name) else "OTEL_EXPORTER_OTLP_PROTOCOL"
        raise OtelConfigError(f"{src}={value!r}: runwasm exports OTLP over {' or '.join(PROTOCOLS)}")
    return value


def _resource_service_name(attrs: str) -> str:
    for item in attrs.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip() == "service.name":
            return value.strip()
    return ""


def service_name(env: Mapping[str, str]) -> str:
    """The shim's ``service.name`` (see module doc)."""
    for candidate in (env.get("OTEL_SERVICE_NAME", ""),
                      _resource_service_name(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))):
        candidate = candidate.strip()
        if candidate and candidate not in CONTAINERD_SERVICE_NAMES:
            return candidate
    return DEFAULT_SERVICE_NAME


def parse(env: Mapping[str, str] | None = None) -> OtelConfig:
    """Read the configuration; raises ``OtelConfigError`` for an unsupported protocol."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return OtelConfig()
    base = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    traces = base or bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    metrics = base or bool(env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        traces = False
    if env.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() == "none":
        metrics = False
    if not (traces or metrics):
        return OtelConfig()
    return OtelConfig(traces=traces, metrics=metrics,
                      traces_protocol=_protocol(env, "TRACES") if traces else DEFAULT_PROTOCOL,
                      metrics_protocol=_protocol(env, "METRICS") if metrics else DEFAULT_PROTOCOL,
                      service_name=service_name(env))


def parse_traceparent(value: str) -> str:
    """The trace id of a valid W3C traceparent, else ""."""
    m = _TRACEPARENT.match(value.strip().lower())
    if not m or m.group(1) == "0" * 32:
        return ""
    return m.group(1)


def handoff_env(env: Mapping[str, str], started_ns: int) -> dict[str, str]:
    """``start``'s half of the start -> server hand-off (``runwasm.shim.common.tracing.adopt_handoff``):
    the environment carrier start inherited (TRACEPARENT & co.) and start's timing, in one
    variable ``RUNWASM_SHIM_TRACE``; {} without a valid TRACEPARENT."""
    carrier = {key: env[var] for key, var in ENV_CARRIER.items() if env.get(var)}
    if not parse_traceparent(carrier.get("traceparent", "")):
        return {}
    return {ENV_HANDOFF: json.dumps({"carrier": carrier, "start_ns": started_ns, "spawn_ns": time.time_ns()})}
