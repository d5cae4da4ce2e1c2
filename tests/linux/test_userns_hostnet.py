"""A user namespace together with the host network namespace (containerd 2.3 runs such pods
with ``hostNetwork: true`` and ``hostUsers: false``): no ``network`` entry in
``linux.namespaces``, a new ``user`` namespace with mappings, and ``/sys`` bind-mounted from the
host (a mapped root may not mount a fresh sysfs for a network namespace it does not own, so
containerd replaces the sysfs mount with an rbind)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.linux.harness import base_config, run_container

pytestmark = pytest.mark.privileged


def test_user_namespace_with_host_network() -> None:
    cfg = base_config(["sh", "-c", "cat /proc/self/uid_map; id -u; readlink /proc/self/ns/net; "
                             "ls /sys/class/net | tr '\\n' ,; echo; cat /proc/sys/net/ipv4/ip_forward"])
    cfg["linux"]["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user")]
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["mounts"] = [m for m in cfg["mounts"] if m["type"] not in ("sysfs", "cgroup")]
    cfg["mounts"].append({"destination": "/sys", "type": "bind", "source": "/sys",
                          "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    r = run_container(cfg, owner=100000)
    assert r.status == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["0", "100000", "65536"]
    assert lines[1] == "0"
    assert lines[2] == os.readlink("/proc/self/ns/net"), "the container must stay in the host network namespace"
    host_ifaces = sorted(p.name for p in Path("/sys/class/net").iterdir())
    assert sorted(x for x in lines[3].split(",") if x) == host_ifaces
    assert lines[4] == Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
