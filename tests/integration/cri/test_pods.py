"""Kubernetes-style pods on the ``runwasm`` handler through containerd's CRI, driven by ``crictl``
like the kubelet: a mixed pod (pause in the Linux executor, a Wasm container and a busybox
sidecar in the same pod network), CRI logs, exec, stats, stop and remove with nothing left."""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import pytest

from tests.integration.cri.conftest import BUSYBOX_REF, EXEC_REF, MEMHOG_REF, SPIN_REF, WASM_REF
from tests.integration.cri.crid import CriContainerd

pytestmark = pytest.mark.integration

CRI_LOG_LINE = re.compile(r"^\S+ (stdout|stderr) (F|P) (.*)$")


def _pod_config(cri: CriContainerd, name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "attempt": 0},
            "log_directory": str(cri.log_dir / name), "linux": {"cgroup_parent": f"/{cri.cgroup_name}"}}


def _wait_state(cri: CriContainerd, cid: str, want: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = json.loads(cri.crictl_run("inspect", cid).stdout)["status"]
        if status["state"] == want:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"container {cid} is {status['state']}, expected {want}: {status}")
        time.sleep(0.1)


def test_mixed_wasm_and_linux_pod(cri: CriContainerd) -> None:
    pod_cfg = cri.write_json("pod-mixed.json", _pod_config(cri, "mixed"))
    pod = cri.crictl_run("runp", "--runtime", "runwasm", str(pod_cfg)).stdout.strip()
    assert cri.pod_netns, "the pod's network namespace was not recorded for the leak check"
    wasm_cfg = cri.write_json("wasm.json", {"metadata": {"name": "hello"}, "image": {"image": WASM_REF},
                                            "log_path": "hello.log", "linux": {}})
    side_cfg = cri.write_json("side.json", {
        "metadata": {"name": "side"}, "image": {"image": BUSYBOX_REF},
        "command": ["sh", "-c", "echo side-started; exec sleep 3600"], "log_path": "side.log", "linux": {}})
    wasm = cri.crictl_run("create", pod, str(wasm_cfg), str(pod_cfg)).stdout.strip()
    side = cri.crictl_run("create", pod, str(side_cfg), str(pod_cfg)).stdout.strip()
    cri.crictl_run("start", wasm)
    cri.crictl_run("start", side)

    done = _wait_state(cri, wasm, "CONTAINER_EXITED")
    assert (done["exitCode"], done["reason"]) == (0, "Completed"), done
    assert cri.crictl_run("logs", wasm).stdout == "hello from wasm\n"
    # the kubelet reads the file itself: CRI log format, one line per write, stream tagged
    raw = (cri.log_dir / "mixed" / "hello.log").read_text().splitlines()
    assert [CRI_LOG_LINE.match(line).groups() for line in raw] == [("stdout", "F", "hello from wasm")]  # type: ignore[union-attr]

    _wait_state(cri, side, "CONTAINER_RUNNING")
    deadline = time.monotonic() + 30
    while "side-started" not in cri.crictl_run("logs", side).stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cri.crictl_run("logs", side).stdout == "side-started\n"
    assert cri.crictl_run("exec", side, "echo", "exec-ok").stdout == "exec-ok\n"

    # the sidecar lives in the pod's network namespace, which the pause sandbox holds
    sandbox_pid = json.loads(cri.crictl_run("inspectp", pod).stdout)["info"]["pid"]
    side_net = cri.crictl_run("exec", side, "stat", "-L", "-c", "%i", "/proc/self/ns/net").stdout.strip()
    assert int(side_net) == os.stat(f"/proc/{sandbox_pid}/ns/net").st_ino

    stats = json.loads(cri.crictl_run("stats", "-o", "json", "--id", side).stdout)["stats"]
    assert len(stats) == 1, stats
    assert int(stats[0]["memory"]["workingSetBytes"]["value"]) > 0, stats

    cri.crictl_run("stopp", pod)
    cri.crictl_run("rmp", pod)
    assert cri.crictl_run("pods", "-q").stdout.split() == []
    deadline = time.monotonic() + 30
    while cri.our_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cri.our_processes() == [], "shim or workload processes outlived crictl rmp"
    assert cri.cri_leftovers() == []


def test_wasm_containers_stats_oom_and_restart(cri: CriContainerd) -> None:
    pod_cfg = cri.write_json("pod-wasm.json", _pod_config(cri, "wasmpod"))
    pod = cri.crictl_run("runp", "--runtime", "runwasm", str(pod_cfg)).stdout.strip()
    spin_cfg = cri.write_json("spin.json", {"metadata": {"name": "spin"}, "image": {"image": SPIN_REF},
                                            "log_path": "spin.log", "linux": {}})
    spin = cri.crictl_run("create", pod, str(spin_cfg), str(pod_cfg)).stdout.strip()
    cri.crictl_run("start", spin)
    _wait_state(cri, spin, "CONTAINER_RUNNING")

    # a Wasm container has real cgroup figures, and so has its pod
    deadline = time.monotonic() + 30
    while True:
        stats = json.loads(cri.crictl_run("stats", "-o", "json", "--id", spin).stdout)["stats"][0]
        cpu = int(stats["cpu"].get("usageCoreNanoSeconds", {}).get("value", 0))
        mem = int(stats["memory"].get("workingSetBytes", {}).get("value", 0))
        if (cpu > 0 and mem > 0) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert cpu > 0, stats
    assert mem > 0, stats
    podstats = json.loads(cri.crictl_run("statsp", "-o", "json", "--id", pod).stdout)["stats"]
    assert int(podstats[0]["linux"]["cpu"]["usageCoreNanoSeconds"]["value"]) > 0, podstats

    # over its memory limit, a Wasm container is OOM-killed and CRI says so
    for attempt in (0, 1):  # ... and it can be restarted in the pod, as the kubelet does
        hog_cfg = cri.write_json(f"hog{attempt}.json", {
            "metadata": {"name": "memhog", "attempt": attempt}, "image": {"image": MEMHOG_REF},
            "log_path": f"memhog.{attempt}.log", "linux": {"resources": {"memory_limit_in_bytes": 64 << 20}}})
        hog = cri.crictl_run("create", pod, str(hog_cfg), str(pod_cfg)).stdout.strip()
        cri.crictl_run("start", hog)
        done = _wait_state(cri, hog, "CONTAINER_EXITED")
        assert (done["exitCode"], done["reason"]) == (137, "OOMKilled"), done
        assert done["metadata"]["attempt"] == attempt
    assert _wait_state(cri, spin, "CONTAINER_RUNNING")  # one container's OOM leaves the others alone

    cri.crictl_run("stopp", pod)
    cri.crictl_run("rmp", pod)
    deadline = time.monotonic() + 30
    while cri.our_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cri.our_processes() == [], "shim or workload processes outlived crictl rmp"


def test_exec_into_a_wasm_container(cri: CriContainerd) -> None:
    """ExecSync/``crictl exec`` of a Wasm command from the container's rootfs, in a new process
    with the container's env (and cgroup, preopens, credentials): exec probes work on Wasm pods."""
    pod_cfg = cri.write_json("pod-exec.json", _pod_config(cri, "execpod"))
    pod = cri.crictl_run("runp", "--runtime", "runwasm", str(pod_cfg)).stdout.strip()
    app_cfg = cri.write_json("app.json", {
        "metadata": {"name": "app"}, "image": {"image": EXEC_REF}, "log_path": "app.log",
        "envs": [{"key": "GREETING", "value": "hi there"}], "linux": {}})
    app = cri.crictl_run("create", pod, str(app_cfg), str(pod_cfg)).stdout.strip()
    cri.crictl_run("start", app)
    _wait_state(cri, app, "CONTAINER_RUNNING")

    assert cri.crictl_run("exec", app, "/hello.wasm").stdout == "hello from wasm\n"
    res = cri.crictl_run("exec", app, "/argsenv.wasm", "one", "two words")
    lines = res.stdout.splitlines()
    assert lines[:3] == ["arg: /argsenv.wasm", "arg: one", "arg: two words"], res.output
    assert "env: GREETING=hi there" in lines, res.output
    assert "env: IMAGE_ENV=from-image" in lines, res.output
    failed = cri.crictl_run("exec", app, "/exit7.wasm", check=False)
    assert failed.returncode != 0
    assert "command terminated with exit code 7" in failed.output, failed.output  # ExecSync's exit code
    refused = cri.crictl_run("exec", app, "/notes.txt", check=False)
    assert refused.returncode != 0
    assert "/notes.txt" in refused.output
    assert "expected a wasm binary" in refused.output, refused.output
    _wait_state(cri, app, "CONTAINER_RUNNING")  # the execs left the container running

    cri.crictl_run("stopp", pod)
    cri.crictl_run("rmp", pod)
