"""``runwasm stress`` (shim/harness/stress.py): its statistics, and a short real run through one shim."""

from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path

import pytest

from runwasm.shim.harness import stress
from tests.conftest import built_fixture


def test_percentile_is_nearest_rank() -> None:
    xs = tuple(float(i) for i in range(1, 101))
    assert stress.percentile(xs, 50) == 50.0
    assert stress.percentile(xs, 99) == 99.0
    assert stress.percentile((3.0,), 99) == 3.0
    assert math.isnan(stress.percentile((), 50))


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="-n >= 1 and -p >= 1, got -n 0 -p 8"):
        asyncio.run(stress.run_stress(built_fixture("wasm", "hello.wasm"), 0, 8))


@pytest.mark.privileged
@pytest.mark.parametrize("full", [False, True], ids=["task-api", "with-start-delete"])
def test_tasks_run_through_one_shim_and_are_timed(full: bool) -> None:
    r = asyncio.run(stress.run_stress(built_fixture("wasm", "hello.wasm"), 6, 3, full=full))
    assert (r.tasks, r.inflight, r.failures, r.errors) == (6, 3, 0, ())
    assert len(r.create_start) == len(r.wait_delete) == 6
    assert r.rate > 0
    text = stress.report(r)
    assert text.startswith("6 tasks, 3 in flight: ")
    assert "create+start  p50" in text
    # the first task of the module leaves its verdict; the ones after it are spawned natively
    assert r.executor == stress.NATIVE_EXECUTOR
    assert f"executor: {stress.NATIVE_EXECUTOR}" in text
    assert [name for name, _ in r.cpu_ms] == ["harness", "server", "zygote", "workloads"]
    assert all(v >= 0 for _, v in r.cpu_ms)
    assert "CPU per task  harness " in text


def test_the_executor_is_read_from_the_shim_log(tmp_path: Path) -> None:
    log = tmp_path / "shim.log"
    log.write_text("level=info msg=\"container x routed to wasm: ...\"\n")
    assert stress.executor_of([log, tmp_path / "missing.log"]) == stress.DEFAULT_EXECUTOR
    with log.open("a") as f:
        f.write("level=info msg=\"Wasm tasks whose plan the server makes are spawned by runwasm-wasm-exec "
                "(/v/libexec/runwasm/runwasm-wasm-exec), without a zygote fork\"\n")
    assert stress.executor_of([log]) == stress.NATIVE_EXECUTOR
    with log.open("a") as f:
        f.write("level=info msg=\"/hello.wasm (host /b/rootfs/hello.wasm) runs in process (wasmtime-py): "
                "WasmExecutor = 'inprocess'\" runtime=io.containerd.runwasm.v1\n")
    assert stress.executor_of([log]) == ("in process (wasmtime-py), one process per task: "
                                         "WasmExecutor = 'inprocess'")


def test_bundles_go_to_a_tmpfs_when_there_is_one() -> None:
    with open("/proc/self/mounts") as f:
        tmpfs = {line.split()[1] for line in f if line.split()[2] == "tmpfs"}
    got = stress.default_state_parent()
    assert got in tmpfs or (got == "/run" and not {"/run", "/dev/shm"} & tmpfs)


@pytest.mark.privileged
def test_a_module_that_fails_stops_the_run_at_its_warm_up() -> None:
    with pytest.raises(stress.StressError, match="warm-up task failed.*exited 7, expected 0"):
        asyncio.run(stress.run_stress(built_fixture("wasm", "exit7.wasm"), 2, 1))
    assert _servers_left() == [], "the anchor's shim server was left running"


def _servers_left(timeout: float = 10.0) -> list[int]:
    """Shim servers of this process's stress runs still alive after ``timeout``."""
    mark = f"stress{os.getpid()}-".encode()
    deadline = time.monotonic() + timeout
    while True:
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if mark in (d / "cmdline").read_bytes():
                        pids.append(int(d.name))
                except OSError:
                    pass
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


@pytest.mark.privileged
def test_a_wrong_exit_status_counts_as_a_failure() -> None:
    r = asyncio.run(stress.run_stress(built_fixture("wasm", "exit7.wasm"), 2, 1, expect_status=7))
    assert (r.failures, len(r.create_start)) == (0, 2)


@pytest.mark.privileged
def test_the_command_finds_its_default_module(capsys: pytest.CaptureFixture[str]) -> None:
    """``runwasm stress`` without MODULE runs the checkout's built hello.wasm (it looked for it
    one directory too shallow after shim/ was grouped by process)."""
    from runwasm.shim.harness.cli import main

    assert main(["stress", "-n", "2", "-p", "1"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("2 tasks, 1 in flight: ")
