"""Trace context: parsing, and end to end through the real shim (log trace_id, event metadata)."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf import empty_pb2

from runwasm.shim import tracing
from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
from runwasm.shim.bundle import make_wasm_bundle
from runwasm.shim.harness import Harness, connected
from tests.conftest import built_fixture

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.mark.parametrize(("value", "expected"), [
    (PARENT, TRACE),
    (PARENT.upper(), TRACE),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""),  # invalid all-zero trace id
    ("garbage", ""),
    ("", ""),
])
def test_parse_traceparent(value: str, expected: str) -> None:
    assert tracing.parse_traceparent(value) == expected


def test_enabled_follows_otel_env() -> None:
    assert not tracing.enabled({})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"})
    assert not tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_SDK_DISABLED": "true"})


@pytest.mark.privileged
def test_trace_context_reaches_log_and_events() -> None:
    """A traceparent on Create shows up as trace_id= in the shim log and on the TaskCreate Forward."""

    async def main() -> tuple[str, list[dict[str, list[str]]], list[str]]:
        async with Harness() as h:
            bundle = h.new_bundle("traced")
            make_wasm_bundle(bundle, built_fixture("wasm", "hello.wasm"), [], [])
            address, version = await h.shim_start("traced", bundle)
            _i, out, err = h.fifos("traced")
            async with connected(address, version) as t:
                await t.call("Create", pb.CreateTaskRequest(id="traced", bundle=str(bundle), stdout=out, stderr=err),
                             pb.CreateTaskResponse, metadata={"traceparent": PARENT})
                await h.events.wait_for("/tasks/create", "traced")
                await t.call("Delete", pb.DeleteRequest(id="traced"), pb.DeleteResponse)
                await h.events.wait_for("/tasks/delete", "traced")
                await t.call("Shutdown", pb.ShutdownRequest(id="traced"), empty_pb2.Empty)
            await h.shim_delete("traced", bundle)
            await asyncio.sleep(0.1)
            return h.log_files[0].read_text(), h.events.metadata, h.events.topics("traced")

    log, metadata, topics = asyncio.run(main())
    assert f"trace_id={TRACE}" in log
    create_md = metadata[topics.index("/tasks/create")]
    assert create_md.get("traceparent", [""])[0].split("-")[1] == TRACE
    assert create_md["containerd-namespace-ttrpc"] == ["runwasm"]
