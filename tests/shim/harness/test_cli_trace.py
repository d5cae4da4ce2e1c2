"""``runwasm run --trace``: the span tree of one run, printed as a waterfall, with no collector."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import built_fixture


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-m", "runwasm.shim.harness.cli", "run", *args], capture_output=True, text=True,
                          timeout=120, env=env, check=False)


@pytest.mark.privileged
def test_trace_prints_the_runs_span_tree() -> None:
    res = _run("--trace", str(built_fixture("wasm", "exit7.wasm")))
    assert res.returncode == 7, res.stderr
    lines = res.stderr.splitlines()
    names = [line.split("  ")[-1].strip() for line in lines]
    root = next(i for i, line in enumerate(lines) if "runwasm run " in line and "[runwasm]" in line)
    create = next(i for i, line in enumerate(lines) if "containerd.task.v3.Task/Create [containerd-shim-runwasm]" in line)
    run = next(i for i, line in enumerate(lines) if "wasm.run [containerd-shim-runwasm] exit_code=7" in line)
    assert root < create < run, res.stderr
    assert lines[root].endswith("ERROR: exit status 7")
    # indentation: the RPC is a child of the run, the workload step a child of the RPC
    assert "█  runwasm run" in lines[root] or " runwasm run" in lines[root]
    assert "    containerd.task.v3.Task/Create" in lines[create]
    assert "      wasm.run" in lines[run]
    assert any("shim.start" in n for n in names)
    assert any("containerd.task.v3.Task/Shutdown" in n for n in names)


@pytest.mark.privileged
def test_without_trace_nothing_is_printed() -> None:
    res = _run(str(built_fixture("wasm", "hello.wasm")))
    assert res.returncode == 0, res.stderr
    assert "span" not in res.stderr
    assert "wasm.run" not in res.stderr
