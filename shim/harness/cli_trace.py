"""Tracing for the ``runwasm`` command line: ``run --trace`` and ``OTEL_*`` for the image commands.

``run --trace`` (``RunTrace``): an in-process OTLP/HTTP receiver; the harness starts the shim
with the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``/``_PROTOCOL`` pointing at it and a
``TRACEPARENT`` naming this run's root span, and sends that ``traceparent`` on every task RPC
(as containerd does). The CLI's own steps (image mount) are recorded with ``runwasm.oci.steps``
into a temporary file. At the end the span tree is printed as a waterfall. The SDK is never
imported in the CLI for this: the root span and the CLI steps are built as plain records.

Other commands (``image import/convert/mount``) with ``OTEL_*`` configured: ``traced_command``
sets the SDK up in this process, parents a ``runwasm <command>`` span on ``TRACEPARENT`` when
given, turns the recorded steps into its children and flushes before returning.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runwasm.oci import steps

if TYPE_CHECKING:
    from runwasm.shim.harness.driver import Harness
    from runwasm.shim.harness.otlp_receiver import SpanRecord

WAIT_FOR_SPANS = 10.0


def _steps_file() -> Any:
    f = tempfile.TemporaryFile(prefix="runwasm-steps-")
    steps.install(f.fileno())
    return f


def _read_steps(f: Any) -> list[dict[str, Any]]:
    steps.install(None)
    f.seek(0)
    out = []
    for line in f.read().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    f.close()
    return out


class RunTrace:
    """One traced ``runwasm run`` (see module doc)."""

    def __init__(self, name: str) -> None:
        from runwasm.shim.harness.otlp_receiver import HttpReceiver

        self.name = name
        self.receiver = HttpReceiver().__enter__()
        self.trace_id = os.urandom(16).hex()
        self.root_id = os.urandom(8).hex()
        self.start_ns = time.time_ns()
        self._steps = _steps_file()

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.root_id}-01"

    def configure(self, h: Harness) -> None:
        h.shim_env = {**self.receiver.env(), "TRACEPARENT": self.traceparent}
        h.trace_metadata = {"traceparent": self.traceparent}

    def finish(self, status: str = "") -> str:
        """Wait for the shim's spans (its server flushes when it exits), return the waterfall."""
        from runwasm.shim.harness.otlp_receiver import SpanRecord, waterfall

        end_ns = time.time_ns()
        mine = self.receiver.collected

        def shim_done(c: Any) -> bool:
            return any(s.trace_id == self.trace_id and s.name.endswith("/Shutdown") for s in c.spans)

        mine.wait_for(shim_done, WAIT_FOR_SPANS)
        self.receiver.__exit__(None, None, None)
        records = [SpanRecord(self.trace_id, self.root_id, "", self.name, "runwasm", 1, self.start_ns, end_ns,
                              2 if status else 0, status, {})]
        records += self._cli_steps()
        records += [s for s in mine.spans if s.trace_id == self.trace_id]
        return waterfall(records)

    def _cli_steps(self) -> list[SpanRecord]:
        from runwasm.shim.harness.otlp_receiver import SpanRecord

        recs = _read_steps(self._steps)
        ids = {r.get("id"): os.urandom(8).hex() for r in recs}
        return [SpanRecord(self.trace_id, ids[r.get("id")], ids.get(r.get("parent"), self.root_id), str(r.get("name")),
                           "runwasm", 1, int(r.get("start", 0)), int(r.get("end", 0)), 2 if r.get("error") else 0,
                           str(r.get("error") or ""), dict(r.get("attrs") or {})) for r in recs]


def traced_command(command: str, fn: Callable[[], int]) -> int:
    """Run ``fn`` under a ``runwasm <command>`` span when ``OTEL_*`` configures traces."""
    from runwasm.shim.common import otel_env

    try:
        config = otel_env.parse()
    except otel_env.OtelConfigError as err:
        print(f"runwasm: tracing disabled: {err}", file=sys.stderr)
        return fn()
    if not config.traces:
        return fn()
    from opentelemetry import context, propagate

    from runwasm.shim.common import spanpipe, tracing

    tracing.setup(config)
    f = _steps_file()
    carrier = {k: os.environ[v] for k, v in tracing.ENV_CARRIER.items() if os.environ.get(v)}
    token = context.attach(propagate.extract(carrier))
    try:
        with tracing.span(f"runwasm {command}"):
            try:
                return fn()
            finally:
                recs = _read_steps(f)
                spanpipe.emit(b"\n".join(json.dumps(r).encode() for r in recs), context.get_current(), command)
    finally:
        context.detach(token)
        tracing.shutdown()
