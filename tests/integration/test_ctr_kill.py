"""``ctr task kill`` on running Wasm tasks started with ``ctr run -d``, and kill after exit."""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests.integration.daemon import Containerd, wait_status
from tests.integration.watch import EventWatcher

pytestmark = pytest.mark.integration




@pytest.mark.parametrize(("image", "sig"), [
    ("spin", signal.SIGKILL),
    ("spin", signal.SIGTERM),
    ("sleep", signal.SIGKILL),  # blocked in poll_oneoff, a host call
], ids=["spin-SIGKILL", "spin-SIGTERM", "sleep-SIGKILL"])
def test_kill_running_task(containerd: Containerd, wasm_images: dict[str, str], image: str,
                           sig: signal.Signals) -> None:
    cid = f"kill-{image}-{sig.name.lower()}"
    containerd.run(wasm_images[image], cid, rm=False, detach=True, check=True)
    pid, _ = wait_status(containerd, cid, "RUNNING")
    with EventWatcher(containerd) as events:
        containerd.ctr("task", "kill", "-s", sig.name, cid)
        exit_event = events.wait_for("/tasks/exit", cid)
    assert exit_event.body["exit_status"] == 128 + sig
    assert exit_event.body["pid"] == pid
    assert wait_status(containerd, cid, "STOPPED")[0] == pid
    after = containerd.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
    assert after.returncode != 0
    assert "not found" in after.output
    removed = containerd.ctr("task", "rm", cid)
    assert f"exit code {128 + sig}" in removed.output
    assert cid not in containerd.tasks()
    containerd.ctr("containers", "rm", cid)
    assert cid not in containerd.ctr("containers", "ls", "-q").stdout.split()


def test_foreground_ctr_run_returns_kill_status(containerd: Containerd, wasm_images: dict[str, str]) -> None:
    cid = "fg-spin"
    argv = containerd.ctr_argv(*containerd.run_args(wasm_images["spin"], cid))
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=containerd.env()) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "spinning\n"
            containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
            assert proc.wait(15) == 137
        finally:
            if proc.poll() is None:
                proc.kill()
    assert cid not in containerd.ctr("containers", "ls", "-q").stdout.split()  # --rm cleaned up


def test_kill_after_exit_is_not_found(containerd: Containerd, wasm_images: dict[str, str]) -> None:
    cid = "exited1"
    containerd.run(wasm_images["exit7"], cid, rm=False, detach=True, check=True)
    wait_status(containerd, cid, "STOPPED")
    res = containerd.ctr("task", "kill", cid, check=False)
    assert res.returncode != 0
    assert "not found" in res.output
    assert "exit code 7" in containerd.ctr("task", "rm", cid).output
    containerd.ctr("containers", "rm", cid)
