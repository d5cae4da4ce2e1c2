"""A wasi:http/proxy component as a Kubernetes pod on the ``runwasm`` handler through containerd's
CRI (1.6 and 2.3.4): served in the pod's network namespace (the one the pause sandbox holds),
``crictl stop`` (SIGTERM) drains it to exit 0."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from fixtures.images import single_file_image
from tests.conftest import built_fixture
from tests.integration.cri.crid import CriContainerd
from tests.integration.test_ctr_http import http_get

pytestmark = pytest.mark.integration
HTTP_REF = "docker.io/library/wasmhttp:latest"


def _state(cri: CriContainerd, cid: str, want: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = json.loads(cri.crictl_run("inspect", cid).stdout)["status"]
        if status["state"] == want:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"container {cid} is {status['state']}, expected {want}: {status}")
        time.sleep(0.1)


def test_http_component_pod_serves_in_pod_netns(cri: CriContainerd, tmp_path: Path) -> None:
    module = built_fixture("wasm", "http_hello.wasm")
    tar = single_file_image(tmp_path / "http.tar", HTTP_REF, "http_hello.wasm", module.read_bytes(),
                            ["/http_hello.wasm"])
    cri.ctr("images", "import", str(tar))
    pod_cfg = cri.write_json("pod-http.json", {
        "metadata": {"name": "http", "namespace": "default", "uid": "uid-http", "attempt": 0},
        "log_directory": str(cri.log_dir / "http"), "linux": {"cgroup_parent": f"/{cri.cgroup_name}"}})
    pod = cri.crictl_run("runp", "--runtime", "runwasm", str(pod_cfg)).stdout.strip()
    ctr_cfg = cri.write_json("http.json", {
        "metadata": {"name": "web"}, "image": {"image": HTTP_REF}, "log_path": "web.log",
        "envs": [{"key": "GREETING", "value": "from-a-pod"}], "linux": {}})
    cid = cri.crictl_run("create", pod, str(ctr_cfg), str(pod_cfg)).stdout.strip()
    cri.crictl_run("start", cid)
    _state(cri, cid, "CONTAINER_RUNNING")
    sandbox_pid = json.loads(cri.crictl_run("inspectp", pod).stdout)["info"]["pid"]
    text = http_get("http://127.0.0.1:8080/pod", netns_pid=sandbox_pid)
    assert text.splitlines()[0] == "hello from wasi:http path=/pod instance-requests=1"
    assert "GREETING=from-a-pod" in text.splitlines()
    cri.crictl_run("stop", "--timeout", "30", cid)
    done = _state(cri, cid, "CONTAINER_EXITED")
    assert done["exitCode"] == 0, done
    assert "Serving HTTP on http://0.0.0.0:8080/" in cri.crictl_run("logs", cid).output
    cri.crictl_run("stopp", pod)
    cri.crictl_run("rmp", pod)
