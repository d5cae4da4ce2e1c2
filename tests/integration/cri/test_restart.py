"""A containerd restart in the middle of a pod's life on the ``runwasm`` handler (1.6 and 2.3.4):
the pod's shim server and workloads keep running while containerd is down; afterwards CRI sees
them as before (ps, inspect, logs, exec of both kinds, stats), exits that happened while
containerd was down are reported with their real codes (the shim keeps the events for the next
containerd), and stop/remove leave nothing behind."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cri.conftest import BUSYBOX_REF, EXEC_REF, SPIN_REF
from tests.integration.cri.crid import CriContainerd
from tests.integration.cri.test_pods import _pod_config, _wait_state

pytestmark = pytest.mark.integration


def _create(cri: CriContainerd, pod: str, pod_cfg: Path, name: str, doc: dict[str, Any]) -> str:
    cfg = cri.write_json(f"restart-{name}.json", {"metadata": {"name": name}, "log_path": f"{name}.log",
                                                   "linux": {}, **doc})
    cid = cri.crictl_run("create", pod, str(cfg), str(pod_cfg)).stdout.strip()
    cri.crictl_run("start", cid)
    _wait_state(cri, cid, "CONTAINER_RUNNING")
    return cid


def _pid(cri: CriContainerd, cid: str) -> int:
    return int(json.loads(cri.crictl_run("inspect", cid).stdout)["info"]["pid"])


def _wait_gone(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # reaped between the two looks: gone
            return
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return  # exited, not yet reaped by its shim
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not exit in {timeout}s")
        time.sleep(0.05)


def _wait_log(cri: CriContainerd, cid: str, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = cri.crictl_run("logs", cid).stdout
        if text in out or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


QUITTER = ["sh", "-c", "echo waiting; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo bye; exit 3"]


def _status(cri: CriContainerd, cid: str) -> tuple[int, str]:
    st = _wait_state(cri, cid, "CONTAINER_EXITED")
    return int(st["exitCode"]), str(st["reason"])


def test_containerd_restart_mid_pod(cri: CriContainerd) -> None:
    """A runwasm pod (two Wasm, two busybox containers) and, for comparison, a runc pod with the
    same kinds of exits; containerd is stopped, one container of each pod is SIGKILLed and one
    exits with 3 while it is down, then containerd starts again."""
    pod_cfg = cri.write_json("pod-restart.json", _pod_config(cri, "restartpod"))
    pod = cri.crictl_run("runp", "--runtime", "runwasm", str(pod_cfg)).stdout.strip()
    app = _create(cri, pod, pod_cfg, "app", {"image": {"image": EXEC_REF}})  # Wasm, blocks for an hour
    victim = _create(cri, pod, pod_cfg, "victim", {"image": {"image": SPIN_REF}})  # Wasm, killed while down
    side = _create(cri, pod, pod_cfg, "side", {
        "image": {"image": BUSYBOX_REF}, "command": ["sh", "-c", "echo side-started; exec sleep 3600"]})
    quitter = _create(cri, pod, pod_cfg, "quitter", {"image": {"image": BUSYBOX_REF}, "command": QUITTER})
    runc_cfg = cri.write_json("pod-restart-runc.json", _pod_config(cri, "restartrunc"))
    runc_pod = cri.crictl_run("runp", "--runtime", "runc", str(runc_cfg)).stdout.strip()
    r_victim = _create(cri, runc_pod, runc_cfg, "rvictim", {"image": {"image": BUSYBOX_REF},
                                                            "command": ["sleep", "3600"]})
    r_quitter = _create(cri, runc_pod, runc_cfg, "rquitter", {"image": {"image": BUSYBOX_REF}, "command": QUITTER})
    for cid in (quitter, r_quitter):
        assert "waiting" in _wait_log(cri, cid, "waiting")
    assert "sleeping" in _wait_log(cri, app, "sleeping")
    pids = {cid: _pid(cri, cid) for cid in (app, victim, side, quitter, r_victim, r_quitter)}

    cri.stop()  # SIGTERM: containerd goes away, its shims and their workloads stay
    try:
        # while containerd is down: a Wasm container is killed, a Linux one exits on its own with 3
        for cid in (victim, r_victim):
            os.kill(pids[cid], signal.SIGKILL)
        for cid in (quitter, r_quitter):
            Path(f"/proc/{pids[cid]}/root/tmp/go").write_text("")
        for cid in (victim, r_victim, quitter, r_quitter):
            _wait_gone(pids[cid])
        for cid in (app, side):
            assert os.path.exists(f"/proc/{pids[cid]}"), f"container {cid} did not survive containerd's stop"
    finally:
        cri.start()  # also after a failure here: the daemon is shared by the session's other CRI tests

    # the exits that happened while containerd was down are reported as runc's are; 1.6 has the
    # real codes, 2.3.4 reports such exits as 255/"Unknown" for runc too
    assert _status(cri, victim) == _status(cri, r_victim)
    assert _status(cri, quitter) == _status(cri, r_quitter)
    if cri.flavour == "1.6":
        assert _status(cri, victim) == (137, "Error")
        assert _status(cri, quitter) == (3, "Error")
    # output written while containerd was down is lost for runc as well (nobody reads the FIFO)
    assert cri.crictl_run("logs", quitter).stdout == cri.crictl_run("logs", r_quitter).stdout
    assert cri.crictl_run("logs", quitter).stdout.startswith("waiting\n")
    # the running containers are still known and served
    running = set(cri.crictl_run("ps", "-q", "--pod", pod, "--state", "Running").stdout.split())
    assert running == {app, side}
    for cid in (app, side):
        assert _wait_state(cri, cid, "CONTAINER_RUNNING")
        assert _pid(cri, cid) == pids[cid]
    assert cri.crictl_run("logs", side).stdout == "side-started\n"
    assert cri.crictl_run("logs", app).stdout == "sleeping\n"
    assert cri.crictl_run("exec", side, "echo", "exec-ok").stdout == "exec-ok\n"
    assert cri.crictl_run("exec", app, "/hello.wasm").stdout == "hello from wasm\n"
    for cid in (app, side):
        stats = json.loads(cri.crictl_run("stats", "-o", "json", "--id", cid).stdout)["stats"]
        assert len(stats) == 1, stats
        assert int(stats[0]["memory"]["workingSetBytes"]["value"]) > 0, stats

    # stop and remove work on containers from before the restart
    cri.crictl_run("stop", side)
    assert _wait_state(cri, side, "CONTAINER_EXITED")["exitCode"] in (137, 143)
    cri.crictl_run("rm", side)
    cri.crictl_run("rm", quitter)
    assert side not in cri.crictl_run("ps", "-a", "-q").stdout.split()
    for p in (pod, runc_pod):
        cri.crictl_run("stopp", p)
        cri.crictl_run("rmp", p)
    assert cri.crictl_run("pods", "-q").stdout.split() == []
    deadline = time.monotonic() + 30
    while cri.our_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cri.our_processes() == [], "shim or workload processes outlived crictl rmp after the restart"
    assert not any(os.path.exists(f"/proc/{p}") for p in pids.values())
    assert cri.cri_leftovers() == []
