"""NRI: containerd 2.3.4 with NRI on, and a test NRI plugin (``nri_plugin.py``, speaking NRI's
multiplexed ttrpc) that adjusts containers at creation. Every adjusted field is observed where
it takes effect: inside the container (``crictl exec``), in the workload process from the host
(/proc/<pid>/limits, stat, numa_maps, ioprio_get), in its cgroup. Fields runwasm cannot honour
fail CreateContainer with a precise error. The same plugin runs against the runc handler (Debian's
runc 1.1.5) for the comparison table in docs/nri.md, whose runc column this test checks.

containerd 1.6 has only NRI v0.1 (one-shot binaries from /opt/nri/bin given JSON on stdin, for
pod-level resources), not this protocol: its config has no NRI plugin to connect to (checked
below), so the NRI cases run on 2.3.4 only.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runwasm.shim.api.nri import api_pb2 as nri
from tests.integration.cri.conftest import BUSYBOX_REF, EXEC_REF, import_stand_in_images
from tests.integration.cri.crid import CRICTL_MISSING, CriContainerd, crictl_binary
from tests.integration.cri.nri_plugin import NriPlugin
from tests.integration.daemon import CONTAINERD23_MISSING, containerd23_bin, containerd_binary

pytestmark = pytest.mark.integration

HOST_IF = "nrih0"
NOFILE = (1111, 2222)
MEM_LIMIT = 96 << 20


class Adjustments:
    """What the plugin answers, by container name (CreateContainer carries the CRI metadata name)."""

    def __init__(self) -> None:
        self.by_name: dict[str, nri.ContainerAdjustment] = {}

    def __call__(self, req: nri.CreateContainerRequest) -> nri.ContainerAdjustment | None:
        return self.by_name.get(req.container.name)


@pytest.fixture(scope="module")
def nri_cri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CriContainerd, NriPlugin, Adjustments]]:
    if containerd23_bin() is None:
        pytest.skip(CONTAINERD23_MISSING)
    if crictl_binary() is None:
        pytest.skip(CRICTL_MISSING)
    with CriContainerd("2.3", nri=True) as daemon:
        import_stand_in_images(daemon, tmp_path_factory.mktemp("nri-images"))
        adjust = Adjustments()
        plugin = NriPlugin(daemon.nri_socket, adjust)
        try:
            plugin.start()
            yield daemon, plugin, adjust
        finally:
            daemon.remove_all_pods()
            plugin.close()
    assert daemon.killed_leftovers == [], f"shim processes had to be killed: {daemon.killed_leftovers}"
    assert daemon.leftovers() == []
    assert daemon.cri_leftovers() == []


def test_containerd16_has_no_nri_plugin_protocol() -> None:
    """1.6's default config has no NRI plugin section (2.3.4's has ``io.containerd.nri.v1.nri``):
    there is nothing for the test plugin to connect to, so the NRI cases run on 2.3.4 only."""
    binary = containerd_binary()
    if binary is None:
        pytest.skip("containerd 1.6 not found on PATH (scripts/install-system.sh)")
    default = subprocess.run([binary, "config", "default"], capture_output=True, text=True, check=True).stdout
    assert "io.containerd.nri.v1.nri" not in default
    bin23 = containerd23_bin()
    if bin23 is not None:
        default23 = subprocess.run([str(bin23 / "containerd"), "config", "default"], capture_output=True, text=True,
                                   check=True).stdout
        assert "io.containerd.nri.v1.nri" in default23


# --- helpers ------------------------------------------------------------------------------------


def _base_adjustment(data_dir: Path) -> nri.ContainerAdjustment:
    a = nri.ContainerAdjustment()
    a.annotations["runwasm.test/nri"] = "adjusted"
    a.env.add(key="NRI_ENV", value="from-plugin")
    a.rlimits.add(type="RLIMIT_NOFILE", soft=NOFILE[0], hard=NOFILE[1])
    a.mounts.add(destination="/nri-data", type="bind", source=str(data_dir), options=["rbind", "ro"])
    a.linux.resources.memory.limit.value = MEM_LIMIT
    a.linux.resources.cpu.quota.value = 50000
    a.linux.resources.cpu.period.value = 100000
    a.linux.scheduler.policy = nri.SCHED_BATCH
    a.linux.scheduler.nice = 7
    a.linux.io_priority.CopyFrom(nri.LinuxIOPriority(priority=6))
    setattr(a.linux.io_priority, "class", nri.IOPRIO_CLASS_BE)  # "class" is a Python keyword
    a.linux.memory_policy.mode = nri.MPOL_BIND
    a.linux.memory_policy.nodes = "0"
    return a


def _linux_adjustment(data_dir: Path) -> nri.ContainerAdjustment:
    a = _base_adjustment(data_dir)
    a.linux.sysctl["net.ipv4.tcp_keepalive_time"] = "1234"
    a.linux.devices.add(path="/dev/nri-null", type="c", major=1, minor=3).file_mode.value = 0o666
    a.linux.net_devices[HOST_IF].name = "nri-in"
    return a


def _pod(cri: CriContainerd, name: str, handler: str) -> tuple[str, Path]:
    cfg = cri.write_json(f"pod-{name}.json", {
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "attempt": 0},
        "log_directory": str(cri.log_dir / name), "linux": {"cgroup_parent": f"/{cri.cgroup_name}"}})
    return cri.crictl_run("runp", "--runtime", handler, str(cfg)).stdout.strip(), cfg


def _running(cri: CriContainerd, cid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        doc: dict[str, Any] = json.loads(cri.crictl_run("inspect", cid).stdout)
        if doc["status"]["state"] == "CONTAINER_RUNNING":
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"container {cid} is not running: {doc['status']}")
        time.sleep(0.1)


_libc = ctypes.CDLL(None, use_errno=True)


def _ioprio(pid: int) -> tuple[int, int]:
    nr = {"x86_64": 252, "aarch64": 31}[platform.machine()]  # ioprio_get
    value = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(1), ctypes.c_int(pid))
    assert value >= 0, os.strerror(ctypes.get_errno())
    return value >> 13, value & 0x1FFF


def _process_view(pid: int) -> dict[str, Any]:
    """What the host sees of the workload process: the adjusted per-process attributes."""
    limits = Path(f"/proc/{pid}/limits").read_text()
    nofile = next(line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files"))
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    numa = Path(f"/proc/{pid}/numa_maps").read_text().splitlines()[0].split()[1]
    return {**_cgroup_limits(pid), "rlimit_nofile": (int(nofile[0]), int(nofile[1])),
            "nice": int(stat[16]), "policy": int(stat[38]),  # fields 19 and 41 of /proc/pid/stat
            "ioprio": _ioprio(pid), "mempolicy": numa}


def _cgroup_limits(pid: int) -> dict[str, Any]:
    """The memory limit and CPU quota/period of ``pid``'s cgroup (v1 or v2 hierarchy)."""
    paths = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path
    root = Path("/sys/fs/cgroup")
    if "memory" in paths:  # v1
        mem = root / "memory" / paths["memory"].lstrip("/")
        cpu = root / "cpu" / paths["cpu"].lstrip("/")
        return {"memory": int((mem / "memory.limit_in_bytes").read_text()),
                "cpu": (int((cpu / "cpu.cfs_quota_us").read_text()), int((cpu / "cpu.cfs_period_us").read_text()))}
    cg = root / paths[""].lstrip("/")
    quota, period = (cg / "cpu.max").read_text().split()
    return {"memory": int((cg / "memory.max").read_text()), "cpu": (int(quota), int(period))}


HONOURED_PROCESS = {"rlimit_nofile": NOFILE, "nice": 7, "policy": 3, "ioprio": (2, 6), "mempolicy": "bind:0",
                    "memory": MEM_LIMIT, "cpu": (50000, 100000)}


def _data_dir(cri: CriContainerd, name: str) -> Path:
    d = cri.dir / f"nri-data-{name}"
    d.mkdir()
    (d / "data.txt").write_text(f"nri mount for {name}\n")
    return d


# --- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("handler", ["runwasm", "runc"])
def test_nri_adjusts_a_linux_container(nri_cri: tuple[CriContainerd, NriPlugin, Adjustments], handler: str) -> None:
    cri, plugin, adjust = nri_cri
    # a veth pair (this kernel has no dummy driver): one end is the device to move
    subprocess.run(["ip", "-n", cri.netns, "link", "add", HOST_IF, "type", "veth", "peer", "name", f"{HOST_IF}p"],
                   check=True, capture_output=True)
    try:
        pod, pod_cfg = _pod(cri, f"nri-linux-{handler}", handler)
        name = f"bb-{handler}"
        adjust.by_name[name] = _linux_adjustment(_data_dir(cri, name))
        cfg = cri.write_json(f"{name}.json", {"metadata": {"name": name}, "image": {"image": BUSYBOX_REF},
                                              "command": ["sleep", "3600"], "log_path": f"{name}.log", "linux": {}})
        cid = cri.crictl_run("create", pod, str(cfg), str(pod_cfg)).stdout.strip()
        assert any(r.container.name == name for r in plugin.requests), "the plugin was not asked"
        cri.crictl_run("start", cid)
        doc = _running(cri, cid)
        spec = doc["info"]["runtimeSpec"]
        assert spec["annotations"]["runwasm.test/nri"] == "adjusted"
        assert spec["process"]["scheduler"]["policy"] == "SCHED_BATCH", spec["process"]
        pid = doc["info"]["pid"]

        def sh(cmd: str) -> str:
            return cri.crictl_run("exec", cid, "sh", "-c", cmd).stdout.strip()

        seen = _process_view(pid)
        seen["env"] = sh("echo $NRI_ENV")
        seen["mount"] = sh("cat /nri-data/data.txt")
        seen["sysctl"] = sh("cat /proc/sys/net/ipv4/tcp_keepalive_time")
        seen["device"] = sh("stat -c '%t:%T %a' /dev/nri-null")
        seen["exec_mempolicy"] = sh("head -n1 /proc/self/numa_maps | cut -d' ' -f2")
        seen["netdev"] = sh("cat /sys/class/net/nri-in/ifindex >/dev/null 2>&1 && echo present || echo absent")
        common = {"env": "from-plugin", "mount": f"nri mount for {name}", "sysctl": "1234", "device": "1:3 666",
                  "rlimit_nofile": NOFILE, "memory": MEM_LIMIT, "cpu": (50000, 100000)}
        if handler == "runwasm":
            assert seen == {**common, **HONOURED_PROCESS, "netdev": "present", "exec_mempolicy": "bind:0"}
        else:
            # runc 1.1.5 (runtime-spec 1.0.2) ignores the runtime-spec 1.2 fields: docs/nri.md's table
            assert seen == {**common, "nice": 0, "policy": 0, "ioprio": (0, 0), "mempolicy": "default",
                            "netdev": "absent", "exec_mempolicy": "default"}, seen
        cri.crictl_run("stopp", pod)
        cri.crictl_run("rmp", pod)
    finally:
        subprocess.run(["ip", "-n", cri.netns, "link", "del", f"{HOST_IF}p"], capture_output=True, check=False)


def test_nri_adjusts_a_wasm_container(nri_cri: tuple[CriContainerd, NriPlugin, Adjustments]) -> None:
    cri, _plugin, adjust = nri_cri
    pod, pod_cfg = _pod(cri, "nri-wasm", "runwasm")
    name = "wasm-app"
    adjust.by_name[name] = _base_adjustment(_data_dir(cri, name))
    cfg = cri.write_json(f"{name}.json", {"metadata": {"name": name}, "image": {"image": EXEC_REF},
                                          "log_path": f"{name}.log", "linux": {}})
    cid = cri.crictl_run("create", pod, str(cfg), str(pod_cfg)).stdout.strip()
    cri.crictl_run("start", cid)
    doc = _running(cri, cid)
    assert _process_view(doc["info"]["pid"]) == HONOURED_PROCESS
    env = cri.crictl_run("exec", cid, "/argsenv.wasm").stdout.splitlines()
    assert "env: NRI_ENV=from-plugin" in env, env
    # the read-only bind mount is a preopen: fd 3 is the rootfs, then the read-write directory binds
    # and then the read-only ones, each in spec order (runwasm.wasm.task.open_preopens)
    binds = [m for m in doc["info"]["runtimeSpec"]["mounts"]
             if ("bind" in m.get("options", []) or "rbind" in m.get("options", []) or m.get("type") == "bind")
             and os.path.isdir(m["source"])]
    order = ([m["destination"] for m in binds if "ro" not in m.get("options", [])]
             + [m["destination"] for m in binds if "ro" in m.get("options", [])])
    fd = 4 + order.index("/nri-data")
    out = cri.crictl_run("exec", cid, "/readfile.wasm", "data.txt", str(fd))
    assert out.stdout == f"nri mount for {name}\n", (order, out.output)
    cri.crictl_run("stopp", pod)
    cri.crictl_run("rmp", pod)


def test_nri_adjustment_runwasm_cannot_honour_fails_create(
        nri_cri: tuple[CriContainerd, NriPlugin, Adjustments]) -> None:
    cri, _plugin, adjust = nri_cri
    pod, pod_cfg = _pod(cri, "nri-refused", "runwasm")
    # a sysctl on a Wasm container: it would change the shim's namespaces, not the container's
    sysctl = nri.ContainerAdjustment()
    sysctl.linux.sysctl["net.ipv4.tcp_keepalive_time"] = "99"
    adjust.by_name["wasm-sysctl"] = sysctl
    # a scheduling policy the kernel does not have (SCHED_ISO was never merged)
    iso = nri.ContainerAdjustment()
    iso.linux.scheduler.policy = nri.SCHED_ISO
    adjust.by_name["bb-iso"] = iso
    adjust.by_name["wasm-iso"] = iso
    for name, image, want in (
            ("wasm-sysctl", EXEC_REF, "linux.sysctl [('net.ipv4.tcp_keepalive_time', '99')] cannot be honoured"),
            ("bb-iso", BUSYBOX_REF, "failed to apply process.scheduler policy=SCHED_ISO"),
            ("wasm-iso", EXEC_REF, "failed to apply process.scheduler policy=SCHED_ISO")):
        cfg = cri.write_json(f"{name}.json", {"metadata": {"name": name}, "image": {"image": image},
                                              "command": ["sleep", "3600"] if image == BUSYBOX_REF else [],
                                              "log_path": f"{name}.log", "linux": {}})
        # containerd's CRI makes the task (the runtime's Create) in StartContainer
        cid = cri.crictl_run("create", pod, str(cfg), str(pod_cfg)).stdout.strip()
        res = cri.crictl_run("start", cid, check=False)
        assert res.returncode != 0, res.output
        assert want in res.output, res.output
    cri.crictl_run("stopp", pod)
    cri.crictl_run("rmp", pod)
