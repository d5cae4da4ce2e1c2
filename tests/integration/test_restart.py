"""containerd dies and comes back while a Wasm task runs: the shim and task survive and reconnect."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.integration.daemon import Containerd
from tests.integration.test_ctr_kill import wait_status
from tests.integration.watch import EventWatcher

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(("image", "how"), [("spin", signal.SIGKILL), ("sleep", signal.SIGTERM)],
                         ids=["spin-containerd-SIGKILL", "sleep-containerd-SIGTERM"])
def test_task_survives_containerd_restart(containerd: Containerd, wasm_images: dict[str, str], image: str,
                                          how: signal.Signals) -> None:
    cid = f"restart-{image}-{how.name.lower()}"
    containerd.run(wasm_images[image], cid, rm=False, detach=True, check=True)
    pid, _ = wait_status(containerd, cid, "RUNNING")
    shims = containerd.our_processes()
    assert pid in shims  # the workload inherits the shim's environment

    containerd.stop(how)
    time.sleep(0.3)
    assert alive(pid), f"task pid {pid} died with containerd ({how.name})"
    containerd.start()

    assert containerd.tasks()[cid] == (pid, "RUNNING")
    assert alive(pid)
    with EventWatcher(containerd) as events:
        containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
        exit_event = events.wait_for("/tasks/exit", cid, timeout=15)
    assert exit_event.body["exit_status"] == 137
    assert wait_status(containerd, cid, "STOPPED")[0] == pid
    assert not alive(pid)
    assert "exit code 137" in containerd.ctr("task", "rm", cid).output
    containerd.ctr("containers", "rm", cid)


def test_exit_while_containerd_is_down_is_reported(containerd: Containerd, wasm_images: dict[str, str]) -> None:
    cid = "restart-exit-while-down"
    containerd.run(wasm_images["spin"], cid, rm=False, detach=True, check=True)
    pid, _ = wait_status(containerd, cid, "RUNNING")
    containerd.stop(signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)  # the task dies while nobody listens for its TaskExit
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    containerd.start()
    if containerd.flavour == "2.3":
        # containerd 2.3 reloads the shim, finds its task exited and cleans it up as a leaked shim
        # ("cleaning leaked shim process"): the task is deleted, the container stays. The runc shim
        # is treated the same way on the same daemon (checked by hand; see docs/design.md).
        deadline = time.monotonic() + 15
        while cid in containerd.tasks() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cid not in containerd.tasks()
        deadline = time.monotonic() + 15
        while containerd.our_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert containerd.our_processes() == []  # the shim server exited after the delete
    else:
        assert wait_status(containerd, cid, "STOPPED")[0] == pid
        assert "exit code 137" in containerd.ctr("task", "rm", cid).output
    containerd.ctr("containers", "rm", cid)
