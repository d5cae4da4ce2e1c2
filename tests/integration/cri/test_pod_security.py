"""A Wasm container's security context through containerd's CRI (what the kubelet sends for
``runAsUser``/``runAsGroup``/``supplementalGroups``, ``seccompProfile: RuntimeDefault`` and
``allowPrivilegeEscalation: false``): the guest process runs with exactly those credentials."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.cri.conftest import SPIN_REF
from tests.integration.cri.crid import CriContainerd

pytestmark = pytest.mark.integration


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


@pytest.mark.parametrize("no_new_privs", [True, False], ids=["nnp", "no-nnp"])
def test_wasm_container_runs_as_run_as_user_under_runtime_default_seccomp(cri: CriContainerd,
                                                                          no_new_privs: bool) -> None:
    name = f"sec{int(no_new_privs)}"
    pod_doc = {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "attempt": 0},
               "log_directory": str(cri.log_dir / name), "linux": {"cgroup_parent": f"/{cri.cgroup_name}"}}
    pod_cfg = cri.write_json(f"pod-{name}.json", pod_doc)
    pod = cri.crictl_run("runp", "--runtime", "runwasm", str(pod_cfg)).stdout.strip()
    try:
        ctr_cfg = cri.write_json(f"{name}.json", {
            "metadata": {"name": "spin"}, "image": {"image": SPIN_REF}, "log_path": "spin.log",
            "linux": {"security_context": {"run_as_user": {"value": 65534}, "run_as_group": {"value": 65533},
                                           "supplemental_groups": [4242], "no_new_privs": no_new_privs,
                                           "seccomp": {"profile_type": 0}}}})
        cid = cri.crictl_run("create", pod, str(ctr_cfg), str(pod_cfg)).stdout.strip()
        cri.crictl_run("start", cid)
        deadline = time.monotonic() + 60
        while True:
            inspect = json.loads(cri.crictl_run("inspect", cid).stdout)
            if inspect["status"]["state"] == "CONTAINER_RUNNING" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert inspect["status"]["state"] == "CONTAINER_RUNNING", inspect["status"]
        st = _status(int(inspect["info"]["pid"]))
        assert st["Uid"].split() == ["65534"] * 4
        assert st["Gid"].split() == ["65533"] * 4
        assert "4242" in st["Groups"].split()
        assert st["Seccomp"] == "2"
        assert st["NoNewPrivs"] == ("1" if no_new_privs else "0")
        # CRI gives the default set as effective/permitted/bounding; like a runc container process
        # of a non-root user after execve, the guest keeps none of it (no ambient set)
        assert int(st["CapEff"], 16) == int(st["CapPrm"], 16) == 0
        assert int(st["CapBnd"], 16) != 0
    finally:
        cri.crictl_run("stopp", pod)
        cri.crictl_run("rmp", pod)
    deadline = time.monotonic() + 30
    while cri.our_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cri.our_processes() == [], "shim or workload processes outlived crictl rmp"
