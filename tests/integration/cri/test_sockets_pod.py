"""``WasmNetwork = true`` in a Kubernetes pod through containerd's CRI (1.6 and 2.3.4): a WASI 0.2
command component (``fixtures/wasm/tcp_client.wat``, run by ``wasmtime run``) talks TCP to a
busybox sidecar (``nc`` echoing through ``cat``) over the pod's loopback. The handler
``runwasm-net`` is the README's runwasm runtime plus ``WasmNetwork = true`` (``crid.py``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from fixtures.images import single_file_image
from tests.conftest import built_fixture
from tests.integration.cri.conftest import BUSYBOX_REF
from tests.integration.cri.crid import NETWORK_HANDLER, CriContainerd

pytestmark = pytest.mark.integration
CLIENT_REF = "docker.io/library/wasmtcpclient:latest"
PORT = 7000


def _state(cri: CriContainerd, cid: str, want: str, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = json.loads(cri.crictl_run("inspect", cid).stdout)["status"]
        if status["state"] == want:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"container {cid} is {status['state']}, expected {want}: {status}")
        time.sleep(0.1)


def _listening(netns_pid: int, port: int) -> bool:
    """A TCP socket in LISTEN state on ``port`` in the network namespace of ``netns_pid``."""
    lines = [line for name in ("tcp", "tcp6") for line in Path(f"/proc/{netns_pid}/net/{name}").read_text().splitlines()[1:]]
    return any(f.split()[1].endswith(f":{port:04X}") and f.split()[3] == "0A" for f in lines)


def test_component_talks_to_a_sidecar_over_the_pods_loopback(cri: CriContainerd, tmp_path: Path) -> None:
    module = built_fixture("wasm", "tcp_client.wasm")
    tar = single_file_image(tmp_path / "tcp.tar", CLIENT_REF, "tcp_client.wasm", module.read_bytes(),
                            ["/tcp_client.wasm", str(PORT)])
    cri.ctr("images", "import", str(tar))
    pod_cfg = cri.write_json("pod-net.json", {
        "metadata": {"name": "net", "namespace": "default", "uid": "uid-net", "attempt": 0},
        "log_directory": str(cri.log_dir / "net"), "linux": {"cgroup_parent": f"/{cri.cgroup_name}"}})
    pod = cri.crictl_run("runp", "--runtime", NETWORK_HANDLER, str(pod_cfg)).stdout.strip()
    side_cfg = cri.write_json("echo.json", {
        "metadata": {"name": "echo"}, "image": {"image": BUSYBOX_REF},
        "command": ["nc", "-ll", "-p", str(PORT), "-e", "cat"], "log_path": "echo.log", "linux": {}})
    side = cri.crictl_run("create", pod, str(side_cfg), str(pod_cfg)).stdout.strip()
    cri.crictl_run("start", side)
    _state(cri, side, "CONTAINER_RUNNING")
    sandbox_pid = json.loads(cri.crictl_run("inspectp", pod).stdout)["info"]["pid"]
    deadline = time.monotonic() + 60
    while not _listening(sandbox_pid, PORT):
        assert time.monotonic() < deadline, \
            f"the sidecar's nc never listened on {PORT}: {cri.crictl_run('logs', side).output!r}"
        time.sleep(0.1)
    client_cfg = cri.write_json("client.json", {
        "metadata": {"name": "client"}, "image": {"image": CLIENT_REF}, "log_path": "client.log", "linux": {}})
    client = cri.crictl_run("create", pod, str(client_cfg), str(pod_cfg)).stdout.strip()
    cri.crictl_run("start", client)
    done = _state(cri, client, "CONTAINER_EXITED")
    logs = cri.crictl_run("logs", client).output
    assert done["exitCode"] == 0, (done, logs)
    assert logs == "reply: hello over wasi:sockets\n"
    cri.crictl_run("stopp", pod)
    cri.crictl_run("rmp", pod)
