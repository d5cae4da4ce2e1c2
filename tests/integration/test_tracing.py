"""One trace through real containerd (1.6 and 2.3.4), the shim and the workload, into a real OTLP
receiver, with ``OTEL_*`` only in the daemon's environment (the shim inherits it).

- 2.3.4: ``OTEL_EXPORTER_OTLP_*`` in the daemon's environment turn its tracing on (docs: 2.x reads
  the standard variables); its ttrpc client injects ``traceparent``, so containerd's
  ``Tasks/Create`` server span -> its ``Task/Create`` client span -> the shim's ``Task/Create``
  server span -> the workload steps form one trace, and containerd's ``Events/Forward`` spans
  are children of the shim's spans.
- 1.6: tracing via ``[plugins."io.containerd.tracing.processor.v1.otlp"]`` where the build has it
  (Debian's 1.6.20 does not: ``ctr plugins ls`` lists no otlp plugin, and nothing of containerd's
  arrives); 1.6 sends no trace context to shims, so the shim's spans are roots of their own
  traces, still with the workload steps under Create and trace ids in the log lines.
- Without ``OTEL_*``: nothing reaches the receiver and the shim's server reports (debug log, at
  exit) that no opentelemetry package was loaded; ``start`` is checked in tests/shim/common/test_tracing.py.

The 2.3.4 binaries come from ``$RUNWASM_CONTAINERD23_BIN`` (``tests/integration/daemon.py``);
that tier is skipped when absent.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.conftest import built_fixture
from tests.integration.daemon import CONTAINERD23_MISSING, Containerd, containerd23_bin, containerd_binary
from tests.integration.images import pack_wasm_image
from tests.otlp import Collected, HttpReceiver, SpanRecord

SHIM = "containerd-shim-runwasm"
CLIENT_KIND, SERVER_KIND = 3, 2


def _daemon(version: str, rx: HttpReceiver | None, extra_env: dict[str, str], extra_config: str = "") -> Containerd:
    env = dict(extra_env)
    if rx is not None:
        env.update(rx.env(), OTEL_SERVICE_NAME="containerd", OTEL_TRACES_SAMPLER="always_on")
    if version == "2.3.4":
        if containerd23_bin() is None:
            pytest.skip(CONTAINERD23_MISSING)
        return Containerd(flavour="2.3", env=env, extra_config=extra_config)
    if containerd_binary() is None:
        pytest.skip("containerd 1.6 not found on PATH (scripts/install-system.sh installs it)")
    config = extra_config
    if rx is not None:
        config += (f'[plugins."io.containerd.tracing.processor.v1.otlp"]\n  endpoint = "{rx.endpoint}"\n'
                  '[plugins."io.containerd.internal.v1.tracing"]\n  sampling_ratio = 1.0\n'
                  '  service_name = "containerd"\n')
    return Containerd(env=env, extra_config=config)


@pytest.fixture(params=["1.6", "2.3.4"])
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("OTEL_") or var in ("TRACEPARENT", "TRACESTATE", "BAGGAGE"):
            monkeypatch.delenv(var)


def _import_hello(d: Containerd) -> str:
    tar = d.dir / "hello.tar"
    ref = pack_wasm_image(built_fixture("wasm", "hello.wasm"), tar, "runwasm.test/hello:1")
    d.ctr("images", "import", "--all-platforms", str(tar))
    return ref


def _linked(c: Collected) -> bool:
    """Every shim Create span's parent and grandparent (containerd's) arrived."""
    ids = {s.span_id: s for s in c.spans}
    creates = [s for s in c.spans if s.service == SHIM and s.name.endswith("Task/Create")]
    return bool(creates) and all(s.parent_span_id in ids and ids[s.parent_span_id].parent_span_id in ids
                                 for s in creates)


def _only(spans: list[SpanRecord], **want: object) -> SpanRecord:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in want.items())]
    assert len(found) == 1, (want, [(s.service, s.name) for s in spans])
    return found[0]


@pytest.mark.usefixtures("clean_otel_env")
def test_one_trace_through_containerd_shim_and_workload(version: str) -> None:
    with HttpReceiver() as rx:
        d = _daemon(version, rx, {})
        with d:
            # Debian's 1.6.20 is built without the tracing plugins: then only the shim exports
            daemon_traces = "otlp" in d.ctr("plugins", "ls").stdout or version == "2.3.4"
            ref = _import_hello(d)
            ok = d.run(ref, "tr-ok")
            assert ok.returncode == 0, ok.output
            assert "hello from wasm" in ok.stdout
            bad = d.run(ref, "tr-bad", "/missing.wasm")
            assert bad.returncode != 0
            assert "/missing.wasm" in bad.output
            d.ids.update({"tr-ok", "tr-bad"})
            got = rx.collected
            assert got.wait_for(lambda c: sum(1 for s in c.spans if s.service == SHIM and s.name.endswith("/Shutdown"))
                                >= 2, 30), [(s.service, s.name) for s in got.spans]
            if version == "2.3.4":  # containerd batches its spans: wait for the Create chains
                assert got.wait_for(_linked, 30)
            log = d.log_path.read_text(errors="replace")
    spans = got.spans
    shim = [s for s in spans if s.service == SHIM]
    ours = [s for s in spans if s.service == "containerd"]
    assert bool(ours) == daemon_traces, "containerd's own spans: expected iff its build has the otlp plugin"
    assert {s.service for s in spans} == ({SHIM, "containerd"} if daemon_traces else {SHIM})
    create = _only(shim, name=f"containerd.task.v{3 if version == '2.3.4' else 2}.Task/Create", status_code=0)
    assert create.kind == SERVER_KIND
    assert create.attributes["rpc.system"] == "ttrpc"
    assert create.attributes["containerd.task.id"] == "tr-ok"
    steps = {s.name: s for s in shim if s.parent_span_id == create.span_id}
    assert {"wasm.resolve", "wasm.compile", "wasm.link", "wasm.run"} <= set(steps)
    assert steps["wasm.run"].attributes["process.exit.code"] == 0
    failed = _only(shim, name=create.name, status_code=2)
    assert failed.attributes["containerd.task.id"] == "tr-bad"
    assert failed.attributes["rpc.ttrpc.status"] == "NOT_FOUND"
    # the shim's log lines in containerd's log carry the trace and span of the RPC they belong to
    assert f"trace_id={create.trace_id} span_id={create.span_id}" in log
    assert any("level=warning" in line and "code=NOT_FOUND" in line and f"trace_id={failed.trace_id}" in line
               for line in log.splitlines())
    if version != "2.3.4":
        return  # 1.6 sends no trace context to shims: nothing more to link
    by_id = {s.span_id: s for s in spans}
    client = by_id[create.parent_span_id]
    assert (client.service, client.kind, client.name) == ("containerd", CLIENT_KIND, create.name)
    root = by_id[client.parent_span_id]
    assert (root.service, root.name) == ("containerd", "containerd.services.tasks.v1.Tasks/Create")
    assert create.trace_id == client.trace_id == root.trace_id
    bad_client = by_id[failed.parent_span_id]
    assert by_id[bad_client.parent_span_id].name == "containerd.services.tasks.v1.Tasks/Create"
    # containerd's Events/Forward server spans hang under the shim's spans (TaskCreate, TaskExit...)
    forwards = [s for s in ours if s.name.endswith("Events/Forward") and s.trace_id == create.trace_id]
    assert forwards
    assert all(by_id.get(s.parent_span_id, root).service == SHIM for s in forwards)


@pytest.mark.usefixtures("clean_otel_env")
def test_without_otel_env_nothing_is_exported_or_imported(version: str) -> None:
    """The daemon at debug level (so the shim is too): the server reports at exit which
    opentelemetry packages it had loaded; the receiver, listening, gets nothing."""
    with HttpReceiver() as rx:  # listening, but nobody is told about it
        d = _daemon(version, None, {}, extra_config='[debug]\n  level = "debug"\n')
        with d:
            ref = _import_hello(d)
            res = d.run(ref, "tr-off")
            assert res.returncode == 0, res.output
            d.ids.add("tr-off")
            d.remove_all_containers()
            deadline = time.monotonic() + 20
            while "opentelemetry packages loaded" not in d.log_path.read_text(errors="replace"):
                assert time.monotonic() < deadline, d.log_tail()
                time.sleep(0.2)
            log = d.log_path.read_text(errors="replace")
        assert rx.collected.requests == 0
    lines = [line for line in log.splitlines() if "opentelemetry packages loaded" in line]
    assert lines
    assert all("opentelemetry packages loaded: none" in line for line in lines), lines
