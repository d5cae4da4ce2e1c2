"""Image steps as spans: ``runwasm image import`` with OTEL_* exports ``runwasm image import`` and its
``image.import`` step (parented on TRACEPARENT); ``runwasm run --trace IMAGE`` shows ``image.mount``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import built_fixture
from tests.otlp import HttpReceiver

RUNWASM = str(Path(sys.executable).parent / "runwasm")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def _runwasm(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([RUNWASM, *args], env={**base, "RUNWASM_ROOT": str(root), **(env or {})},
                          capture_output=True, text=True, timeout=120, check=False)


def test_image_import_is_traced_with_otel_env(tmp_path: Path) -> None:
    root, tar = tmp_path / "store", tmp_path / "hello.tar"
    assert _runwasm(root, "image", "pack-wasm", str(built_fixture("wasm", "hello.wasm")), "-o", str(tar),
                    "--name", "t/hello:1").returncode == 0
    with HttpReceiver() as rx:
        res = _runwasm(root, "image", "import", str(tar), env={**rx.env(), "TRACEPARENT": PARENT})
        assert res.returncode == 0, res.stderr
        assert rx.collected.wait_for(lambda c: len(c.spans) >= 2, 10)
    spans = {s.name: s for s in rx.collected.spans}
    top = spans["runwasm image import"]
    assert (top.trace_id, top.parent_span_id, top.service) == (TRACE, "00f067aa0ba902b7", "containerd-shim-runwasm")
    step = spans["image.import"]
    assert step.parent_span_id == top.span_id
    assert step.attributes["runwasm.image.archive"] == str(tar)


@pytest.mark.privileged
def test_run_trace_of_an_image_shows_its_mount(tmp_path: Path) -> None:
    root, tar = tmp_path / "store", tmp_path / "hello.tar"
    assert _runwasm(root, "image", "pack-wasm", str(built_fixture("wasm", "hello.wasm")), "-o", str(tar),
                    "--name", "t/hello:1").returncode == 0
    assert _runwasm(root, "image", "import", str(tar)).returncode == 0
    res = _runwasm(root, "run", "--trace", "t/hello:1")
    assert res.returncode == 0, res.stderr
    assert any("image.mount [runwasm]" in line and "rootfs=" in line for line in res.stderr.splitlines()), res.stderr
