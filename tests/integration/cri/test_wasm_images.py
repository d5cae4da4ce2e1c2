"""Wasm OCI images whose module is a layer, as Kubernetes pods on the ``runwasm`` handler through
containerd's CRI: the CNCF Wasm artifact (config ``application/vnd.wasm.config.v0+json``, which
``ctr run`` refuses) and runwasi's flavour, with runwasi's bare ``command: ["wasi-demo.wasm"]``.
The shim reads the layer from containerd's content store (``shim/server/image_module.py``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import built_fixture
from tests.integration.cri.crid import CriContainerd
from tests.integration.images import pack_wasm_image

pytestmark = pytest.mark.integration


def _wait_exit(cri: CriContainerd, cid: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = json.loads(cri.crictl_run("inspect", cid).stdout)["status"]
        if status["state"] == "CONTAINER_EXITED":
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"container {cid} is {status['state']}: {status}")
        time.sleep(0.1)


@pytest.mark.parametrize("fmt", ["artifact", "runwasi"])
def test_layer_image_runs_as_a_pod(cri: CriContainerd, tmp_path: Path, fmt: str) -> None:
    ref = pack_wasm_image(built_fixture("wasm", "argsenv.wasm"), tmp_path / f"{fmt}.tar",
                          f"runwasm.test/cri-{fmt}:1", fmt)
    imported = cri.ctr("images", "import", "--all-platforms", str(tmp_path / f"{fmt}.tar"), check=False)
    if cri.flavour == "1.6":  # Debian's 1.6.20 counts the Wasm layer as a filesystem layer when unpacking
        assert "mismatched image rootfs and manifest layers" in imported.output, imported.output
        return
    assert imported.returncode == 0, imported.output
    name = f"wasm-{fmt}"
    pod_cfg = cri.write_json(f"pod-{name}.json", {
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "attempt": 0},
        "log_directory": str(cri.log_dir / name), "linux": {"cgroup_parent": f"/{cri.cgroup_name}"}})
    pod = cri.crictl_run("runp", "--runtime", "runwasm", str(pod_cfg)).stdout.strip()
    ctr_cfg = cri.write_json(f"{name}.json", {
        "metadata": {"name": "demo"}, "image": {"image": ref}, "command": ["wasi-demo.wasm"],
        "args": ["from-a-pod"], "log_path": "demo.log", "linux": {}})
    cid = cri.crictl_run("create", pod, str(ctr_cfg), str(pod_cfg)).stdout.strip()
    cri.crictl_run("start", cid)
    done = _wait_exit(cri, cid)
    logs = cri.crictl_run("logs", cid).stdout.splitlines()
    assert done["exitCode"] == 0, (done, logs)
    assert logs[:2] == ["arg: wasi-demo.wasm", "arg: from-a-pod"]
    cri.crictl_run("stopp", pod)
    cri.crictl_run("rmp", pod)
