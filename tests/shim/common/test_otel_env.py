"""The OTEL_* environment -> OtelConfig rules (what is on, which protocol, which service.name)."""

from __future__ import annotations

import pytest

from runwasm.shim.common import otel_env
from runwasm.shim.common.otel_env import DEFAULT_SERVICE_NAME, OtelConfigError

EP = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


def test_nothing_set_means_nothing_on() -> None:
    cfg = otel_env.parse({})
    assert not cfg.any


def test_endpoints_turn_signals_on() -> None:
    both = otel_env.parse(EP)
    assert (both.traces, both.metrics) == (True, True)
    only_traces = otel_env.parse({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"})
    assert (only_traces.traces, only_traces.metrics) == (True, False)
    only_metrics = otel_env.parse({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://x:4318/v1/metrics"})
    assert (only_metrics.traces, only_metrics.metrics) == (False, True)


@pytest.mark.parametrize("value", ["true", "TRUE", " true "])
def test_sdk_disabled_wins(value: str) -> None:
    assert not otel_env.parse({**EP, "OTEL_SDK_DISABLED": value}).any


def test_exporter_none_turns_a_signal_off() -> None:
    cfg = otel_env.parse({**EP, "OTEL_METRICS_EXPORTER": "none"})
    assert (cfg.traces, cfg.metrics) == (True, False)


def test_protocol_defaults_to_http_protobuf_per_spec() -> None:
    cfg = otel_env.parse(EP)
    assert (cfg.traces_protocol, cfg.metrics_protocol) == ("http/protobuf", "http/protobuf")


def test_protocol_general_and_per_signal() -> None:
    cfg = otel_env.parse({**EP, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                          "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"})
    assert (cfg.traces_protocol, cfg.metrics_protocol) == ("grpc", "http/protobuf")


def test_unsupported_protocol_is_refused_with_the_variable_named() -> None:
    with pytest.raises(OtelConfigError, match=r"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json'"):
        otel_env.parse({**EP, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"})


@pytest.mark.parametrize(("env", "expected"), [
    ({}, DEFAULT_SERVICE_NAME),
    ({"OTEL_SERVICE_NAME": "containerd"}, DEFAULT_SERVICE_NAME),  # containerd's own, inherited
    ({"OTEL_SERVICE_NAME": "edge-shim"}, "edge-shim"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "a=b,service.name=from-attrs"}, "from-attrs"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=containerd"}, DEFAULT_SERVICE_NAME),
    ({"OTEL_SERVICE_NAME": "containerd", "OTEL_RESOURCE_ATTRIBUTES": "service.name=x"}, "x"),
])
def test_service_name_is_ours_never_containerds(env: dict[str, str], expected: str) -> None:
    assert otel_env.parse({**EP, **env}).service_name == expected
