"""containerd 2.3.4's CRI reads runwasm's ``-info`` features and so allows recursive read-only
volumes on the ``runwasm`` handler (it allows ``rro`` only for handlers whose features list it);
the volume and its submounts are then read-only in the container, as with runc."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.cri.conftest import BUSYBOX_REF
from tests.integration.cri.crid import CriContainerd

pytestmark = pytest.mark.integration


def _need_23(cri: CriContainerd) -> None:
    if cri.flavour != "2.3":
        pytest.skip("containerd 1.6's CRI has neither runtime handler features nor recursive read-only mounts")


def test_runtime_handler_features(cri: CriContainerd) -> None:
    _need_23(cri)
    info = json.loads(cri.crictl_run("info").stdout)
    handlers = {h.get("name", ""): h.get("features", {}) for h in info["runtimeHandlers"]}
    assert handlers["runwasm"] == {"recursive_read_only_mounts": True}, handlers


def test_recursive_read_only_volume(cri: CriContainerd, tree: Path) -> None:
    _need_23(cri)
    pod_cfg = cri.write_json("pod-rro.json", {
        "metadata": {"name": "rro", "namespace": "default", "uid": "uid-rro", "attempt": 0},
        "log_directory": str(cri.log_dir / "rro"), "linux": {"cgroup_parent": f"/{cri.cgroup_name}"}})
    pod = cri.crictl_run("runp", "--runtime", "runwasm", str(pod_cfg)).stdout.strip()
    probe = ("for f in /data/top /data/sub/inner; do if echo x > $f 2>/dev/null; then echo $f=rw; "
             "else echo $f=ro; fi; done")
    ctr_cfg = cri.write_json("rro.json", {
        "metadata": {"name": "rro"}, "image": {"image": BUSYBOX_REF}, "command": ["sh", "-c", probe],
        "log_path": "rro.log", "linux": {},
        "mounts": [{"container_path": "/data", "host_path": str(tree), "readonly": True,
                    "recursive_read_only": True}]})
    try:
        cid = cri.crictl_run("create", pod, str(ctr_cfg), str(pod_cfg)).stdout.strip()
        cri.crictl_run("start", cid)
        deadline = time.monotonic() + 60
        while True:
            status = json.loads(cri.crictl_run("inspect", cid).stdout)["status"]
            if status["state"] == "CONTAINER_EXITED" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status["exitCode"] == 0, status
        assert cri.crictl_run("logs", cid).stdout.splitlines() == ["/data/top=ro", "/data/sub/inner=ro"]
        assert not (tree / "top").exists()
        assert not (tree / "sub" / "inner").exists()
    finally:
        cri.crictl_run("stopp", pod, check=False)
        cri.crictl_run("rmp", pod, check=False)
