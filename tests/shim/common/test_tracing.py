"""Trace context and OpenTelemetry through the real shim binary, against real OTLP receivers.

- Without ``OTEL_*``: no opentelemetry module is imported in the real ``start`` and server
  processes (checked with their own ``sys.modules`` at exit, via a ``sitecustomize``), the log
  still carries containerd's trace id, and no ``traceparent`` is forwarded on events.
- With ``OTEL_*`` (gRPC and http/protobuf receivers): one trace from the caller's span through
  the shim's RPC server spans into the workload's steps, with the right parents and attributes,
  an ERROR status and code on a failed Create, the events' ``traceparent`` naming spans that
  arrive, log lines with the active span's ids, and the metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
from runwasm.shim.common import tracing
from runwasm.shim.harness.bundle import base_spec, make_wasm_bundle
from runwasm.shim.harness.driver import Harness, connected
from runwasm.shim.ttrpc.status import Code, RpcError
from tests.conftest import built_fixture
from tests.otlp import Collected, SpanRecord, receiver
from tests.shim.e2e.helpers import log_with

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
PARENT = f"00-{TRACE}-{CALLER_SPAN}-01"
START_PARENT = f"00-{TRACE}-b7ad6b7169203331-01"
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER

START_WRAPPER = """
import json, os, sys
from runwasm.shim.__main__ import main
code = main(sys.argv[1:])
mods = sorted(m for m in sys.modules if m.split('.')[0] in ('opentelemetry', 'grpc'))
with open(os.environ["RUNWASM_TEST_MODULES"] + "." + sys.argv[-1], "w") as f:
    json.dump(mods, f)
sys.exit(code)
"""


@pytest.mark.parametrize(("value", "expected"), [
    (PARENT, TRACE),
    (PARENT.upper(), TRACE),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""),  # invalid all-zero trace id
    ("garbage", ""),
    ("", ""),
])
def test_parse_traceparent(value: str, expected: str) -> None:
    assert tracing.parse_traceparent(value) == expected


def _clear_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("OTEL_") or var in ("TRACEPARENT", "TRACESTATE", "BAGGAGE"):
            monkeypatch.delenv(var)


async def _run_one(h: Harness, cid: str, module: str, metadata: dict[str, str]) -> None:
    bundle = h.new_bundle(cid)
    make_wasm_bundle(bundle, built_fixture("wasm", module), [], [])
    address, version = await h.shim_start(cid, bundle)
    _i, out, err = h.fifos(cid)
    async with connected(address, version, metadata) as t:
        await t.call("Create", pb.CreateTaskRequest(id=cid, bundle=str(bundle), stdout=out, stderr=err),
                     pb.CreateTaskResponse)
        await h.events.wait_for("/tasks/create", cid)
        await t.call("Start", pb.StartRequest(id=cid), pb.StartResponse)
        await t.call("Wait", pb.WaitRequest(id=cid), pb.WaitResponse, timeout=30)
        await h.events.wait_for("/tasks/exit", cid)
        # a Create that fails in the workload: the module does not compile
        bad = h.new_bundle("bad")
        (bad / "rootfs").mkdir()
        (bad / "rootfs" / "bad.wasm").write_bytes(b"\0asm\x01\x00\x00\x00\xff\xff\xff")
        (bad / "config.json").write_text(json.dumps(base_spec(["/bad.wasm"])))
        with pytest.raises(RpcError) as failed:
            await t.call("Create", pb.CreateTaskRequest(id="bad", bundle=str(bad), stdout=out, stderr=err),
                         pb.CreateTaskResponse)
        assert failed.value.code == Code.INVALID_ARGUMENT, failed.value
        await t.call("Delete", pb.DeleteRequest(id=cid), pb.DeleteResponse)
        await h.events.wait_for("/tasks/delete", cid)
        await t.call("Shutdown", pb.ShutdownRequest(id=cid), empty_pb2.Empty)
    await h.shim_delete(cid, bundle)


def _md(h: Harness, topic: str, cid: str) -> dict[str, list[str]]:
    return h.events.metadata[h.events.topics(cid).index(topic)]


@pytest.mark.privileged
def test_without_otel_env_nothing_is_imported_or_invented(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``start`` runs in-process in a wrapper that dumps its ``sys.modules`` after the action; the
    server it spawns reports its own at exit in the debug log."""
    _clear_otel(monkeypatch)
    wrapper = tmp_path / "start_wrapper.py"
    wrapper.write_text(START_WRAPPER)
    dump = tmp_path / "start-modules.json"
    monkeypatch.setattr("runwasm.shim.harness.driver.shim_command", lambda: [sys.executable, str(wrapper)])

    async def main() -> tuple[Harness, str]:
        async with Harness() as h:
            h.debug = True
            h.shim_env = {"RUNWASM_TEST_MODULES": str(dump), "TRACEPARENT": START_PARENT}
            await _run_one(h, "plain", "hello.wasm", {"traceparent": PARENT})
            return h, await log_with(h.log_files[0], "opentelemetry packages loaded: none", "Create bad failed: code=")

    h, log = asyncio.run(main())
    # the real start and server processes: no opentelemetry (nor grpc) module
    for action in ("start", "delete"):
        assert json.loads(Path(f"{dump}.{action}").read_text()) == [], action
    assert "opentelemetry packages loaded: none" in log
    # log correlation with containerd's trace id still works, without any span id of ours
    lines = [line for line in log.splitlines() if f"trace_id={TRACE}" in line]
    assert lines
    assert not any("span_id=" in line for line in lines)
    # failed RPCs are logged at warning with their code
    assert any("level=warning" in line and "Create bad failed: code=" in line for line in log.splitlines()), log
    # no span id invented: nothing forwarded to containerd
    for topic in ("/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"):
        assert "traceparent" not in _md(h, topic, "plain"), topic


def _one(spans: list[SpanRecord], name: str, **attrs: object) -> SpanRecord:
    found = [s for s in spans if s.name == name and all(s.attributes.get(k) == v for k, v in attrs.items())]
    assert len(found) == 1, (name, attrs, [(s.name, s.attributes) for s in spans])
    return found[0]


@pytest.mark.privileged
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_one_trace_from_caller_to_workload(protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_otel(monkeypatch)
    with receiver(protocol) as rx:

        async def main() -> tuple[Harness, str]:
            async with Harness() as h:
                h.shim_env = {**rx.env(), "OTEL_SERVICE_NAME": "containerd",  # containerd's, inherited
                              "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
                              "TRACEPARENT": START_PARENT}
                await _run_one(h, "traced", "exit7.wasm", {"traceparent": PARENT})
                return h, h.log_files[0].read_text()

        h, log = asyncio.run(main())
        got: Collected = rx.collected
        assert got.wait_for(lambda c: any(s.name.endswith("/Shutdown") for s in c.spans), 20), got.spans
        assert got.wait_for(lambda c: {"rpc.server.duration", "runwasm.task.start.duration"}
                            <= {name for _svc, name in c.metrics}, 20), got.metrics
    spans = [s for s in got.spans if s.trace_id == TRACE]
    assert {s.service for s in got.spans} == {"containerd-shim-runwasm"}
    # start -> server hand-off: start's span under the TRACEPARENT start inherited
    assert _one(spans, "shim.start").parent_span_id == START_PARENT.split("-")[2]
    create = _one(spans, "containerd.task.v3.Task/Create", **{"containerd.task.id": "traced"})
    assert create.parent_span_id == CALLER_SPAN
    assert create.kind == SERVER_KIND
    assert create.attributes["rpc.system"] == "ttrpc"
    assert create.attributes["rpc.service"] == "containerd.task.v3.Task"
    assert create.attributes["rpc.method"] == "Create"
    assert not create.error
    # the workload's steps, children of the RPC that spawned it
    steps = {s.name: s for s in spans if s.parent_span_id == create.span_id}
    assert set(steps) == {"wasm.resolve", "wasm.compile", "wasm.link", "wasm.run"}
    assert not any(s.error for s in steps.values())
    assert steps["wasm.run"].attributes["process.exit.code"] == 7
    assert _one(spans, "wasm.instantiate").parent_span_id == steps["wasm.run"].span_id
    assert isinstance(steps["wasm.compile"].attributes["runwasm.wasm.cache.hit"], bool)
    # the failed Create: ERROR status with the code, and the failed step inside it
    bad = _one(spans, "containerd.task.v3.Task/Create", **{"containerd.task.id": "bad"})
    assert bad.error
    assert bad.attributes["rpc.grpc.status_code"] == Code.INVALID_ARGUMENT
    assert bad.attributes["rpc.ttrpc.status"] == "INVALID_ARGUMENT"
    failed_steps = [s for s in spans if s.parent_span_id == bad.span_id and s.error]
    assert [s.name for s in failed_steps] == ["wasm.compile"]
    # events carry our context: the traceparent names a span of ours that arrived
    ids = {s.span_id for s in spans}
    for topic in ("/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"):
        tp = _md(h, topic, "traced")["traceparent"][0]
        assert tp.split("-")[1] == TRACE, topic
        assert tp.split("-")[2] in ids, topic
    assert _md(h, "/tasks/exit", "traced")["traceparent"][0].split("-")[2] == create.span_id
    # log lines inside the Create carry its trace and span ids
    assert f"trace_id={TRACE} span_id={create.span_id}" in log
    assert any("level=warning" in line and "code=" in line and f"trace_id={TRACE}" in line
               for line in log.splitlines())


def test_waterfall_orders_children_and_marks_errors() -> None:
    from runwasm.shim.harness.otlp_receiver import waterfall

    spans = [SpanRecord("t", "a", "", "root", "svc", 1, 0, 100, 0, "", {}),
             SpanRecord("t", "c", "a", "second", "svc", 1, 50, 90, 2, "boom", {}),
             SpanRecord("t", "b", "a", "first", "svc", 1, 10, 40, 0, "", {"process.exit.code": 3})]
    lines = waterfall(spans, width=10).splitlines()
    assert "  root [svc]" in lines[1]
    assert "    first [svc] exit_code=3" in lines[2]  # a child: indented one level, ordered by start
    assert "    second [svc]" in lines[3]
    assert lines[3].endswith("ERROR: boom")


@pytest.mark.privileged
def test_linux_init_steps_and_exec_span_arrive(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Linux init's steps are spans under Create; ``linux.exec`` is sent before execve."""
    _clear_otel(monkeypatch)
    with receiver("http/protobuf") as rx:

        async def main() -> None:
            async with Harness() as h:
                h.shim_env = rx.env()
                bundle = h.new_bundle("lx")
                spec = base_spec(["/bin/sh", "-c", "exit 3"])
                spec["root"]["path"] = str(built_fixture("linux", "rootfs"))
                (bundle / "config.json").write_text(json.dumps(spec))
                address, version = await h.shim_start("lx", bundle)
                _i, out, err = h.fifos("lx")
                async with connected(address, version, {"traceparent": PARENT}) as t:
                    await t.call("Create", pb.CreateTaskRequest(id="lx", bundle=str(bundle), stdout=out, stderr=err),
                                 pb.CreateTaskResponse)
                    await t.call("Start", pb.StartRequest(id="lx"), pb.StartResponse)
                    waited = await t.call("Wait", pb.WaitRequest(id="lx"), pb.WaitResponse, timeout=30)
                    assert waited.exit_status == 3
                    await t.call("Delete", pb.DeleteRequest(id="lx"), pb.DeleteResponse)
                    await t.call("Shutdown", pb.ShutdownRequest(id="lx"), empty_pb2.Empty)
                await h.shim_delete("lx", bundle)

        asyncio.run(main())
        assert rx.collected.wait_for(lambda c: any(s.name.endswith("/Shutdown") for s in c.spans), 20)
    spans = rx.collected.spans
    create = _one(spans, "containerd.task.v3.Task/Create")
    init = _one(spans, "linux.init")
    assert init.parent_span_id == create.span_id
    names = [s.name for s in sorted(spans, key=lambda s: s.start_ns) if s.parent_span_id == init.span_id]
    for step in ("linux.cgroup", "linux.namespaces.unshare", "linux.mounts", "linux.rootfs.pivot",
                 "linux.seccomp.compile", "linux.credentials"):
        assert step in names, names
    assert names.index("linux.mounts") < names.index("linux.rootfs.pivot") < names.index("linux.credentials")
    exec_span = _one(spans, "linux.exec")
    assert exec_span.parent_span_id == create.span_id
    assert exec_span.attributes["process.executable.path"] == "/bin/sh"
    assert exec_span.start_ns >= init.end_ns


@pytest.mark.privileged
@pytest.mark.parametrize("legacy", [False, True], ids=["bootstrap-log_level", "legacy-debug-flag"])
def test_debug_log_has_request_details_routing_and_cache(legacy: bool, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    """At debug level (bootstrap log_level DEBUG, or -debug): the Create request's fields (rootfs
    mounts and options), the routing decision and the workload's compile cache miss then hit; and
    the debug level does not change the route: the second task, whose link-check verdict the first
    left, runs under ``wasmtime-min`` without wasmtime-py (``runwasm.wasm.fast_min``) and nothing
    runs in process for being "traced"."""
    _clear_otel(monkeypatch)
    monkeypatch.setenv("RUNWASM_WASM_CACHE", str(tmp_path / "cache"))

    async def main() -> str:
        async with Harness(legacy=legacy) as h:
            h.debug = True
            for cid in ("dbg1", "dbg2"):
                bundle = h.new_bundle(cid)
                make_wasm_bundle(bundle, built_fixture("wasm", "hello.wasm"), [], [])
                src = bundle / "rootfs"
                src.rename(bundle / "src")
                (bundle / "rootfs").mkdir()
                address, version = await h.shim_start(cid, bundle)
                _i, out, err = h.fifos(cid)
                async with connected(address, version) as t:
                    mount = pb.CreateTaskRequest(id=cid, bundle=str(bundle), stdout=out, stderr=err)
                    mount.rootfs.add(type="bind", source=str(bundle / "src"), options=["rbind", "ro"])
                    await t.call("Create", mount, pb.CreateTaskResponse)
                    await t.call("Start", pb.StartRequest(id=cid), pb.StartResponse)
                    await t.call("Wait", pb.WaitRequest(id=cid), pb.WaitResponse, timeout=30)
                    await t.call("Delete", pb.DeleteRequest(id=cid), pb.DeleteResponse)
                    await t.call("Shutdown", pb.ShutdownRequest(id=cid), empty_pb2.Empty)
                await h.shim_delete(cid, bundle)
            # the lines travel through the log FIFO to the harness's reader: wait for them
            # (however busy the machine is) rather than for a fixed time
            deadline = time.monotonic() + 30
            while True:
                log = "\n".join(p.read_text() for p in h.log_files)
                if all(n in log for n in needles) or time.monotonic() > deadline:
                    return log
                await asyncio.sleep(0.05)

    needles = ("level=debug", "Create dbg1 bundle=", "rootfs=(bind:", "[rbind,ro])", "container dbg1 routed to wasm",
               "dbg1: compile cache miss", "dbg2: compile cache hit", "dbg2: step wasm.cli_artifact took")
    log = asyncio.run(main())
    for needle in needles:
        assert needle in log
    assert "runs in process (wasmtime-py)" not in log
    assert "dbg1: step wasm.compile took" in log
    assert "dbg2: step wasm.compile" not in log
