"""Host-namespace pods on the ``runwasm`` handler share containerd's namespaces, not those of the
warm template the shim may be forked from: a host-network container is in containerd's network
namespace (here the daemon's private one) even when the node's template was launched elsewhere
(critest's "HostNetwork is true" spec found this)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from runwasm.shim.template import process
from tests.integration.cri.conftest import BUSYBOX_REF
from tests.integration.cri.crid import CriContainerd
from tests.shim.e2e.test_template_e2e import ensure_template

pytestmark = pytest.mark.integration

NODE = 2  # CRI NamespaceMode NODE


def test_host_network_container_is_in_containerds_network_namespace(cri: CriContainerd,
                                                                    private_template: Path) -> None:
    # the session's template, launched from this (the host's) network namespace, not the daemon's
    process.stop_templates(str(private_template))
    ensure_template(private_template)
    host_ns = {"namespace_options": {"network": NODE}}
    pod_cfg = cri.write_json("pod-hostnet.json", {
        "metadata": {"name": "hostnet", "namespace": "default", "uid": "uid-hostnet", "attempt": 0},
        "log_directory": str(cri.log_dir / "hostnet"),
        "linux": {"cgroup_parent": f"/{cri.cgroup_name}", "security_context": host_ns}})
    pod = cri.crictl_run("runp", "--runtime", "runwasm", str(pod_cfg)).stdout.strip()
    try:
        cfg = cri.write_json("hostnet.json", {
            "metadata": {"name": "hostnet"}, "image": {"image": BUSYBOX_REF}, "log_path": "hostnet.log",
            "command": ["sleep", "3600"], "linux": {"security_context": host_ns}})
        cid = cri.crictl_run("create", pod, str(cfg), str(pod_cfg)).stdout.strip()
        cri.crictl_run("start", cid)
        deadline = time.monotonic() + 60
        while True:
            inspect = json.loads(cri.crictl_run("inspect", cid).stdout)
            if inspect["status"]["state"] == "CONTAINER_RUNNING" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert inspect["status"]["state"] == "CONTAINER_RUNNING", inspect["status"]
        assert cri.proc is not None
        daemon_net = os.stat(f"/proc/{cri.proc.pid}/ns/net").st_ino
        assert os.stat("/proc/self/ns/net").st_ino != daemon_net  # the test means something
        assert os.stat(f"/proc/{inspect['info']['pid']}/ns/net").st_ino == daemon_net
    finally:
        cri.crictl_run("stopp", pod)
        cri.crictl_run("rmp", pod)
