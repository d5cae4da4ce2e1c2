"""Pure unit tests (no root): resources mapping, mount options, secure_join, spec JSON round
trip, cgroup v2 against a fake cgroupfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from runwasm.linux import syscalls as sc
from runwasm.linux.cgroups import CgroupV2, validate_path
from runwasm.linux.errors import InvalidArgumentError
from runwasm.linux.mounts import parse_options, secure_join
from runwasm.linux.resources import parse_resources, v1_writes, v2_writes
from runwasm.linux.stats import read_metrics
from runwasm.oci.runtime_spec import RuntimeSpec, spec_to_json
from tests.linux.harness import base_config


def test_resources_to_v1_and_v2_files() -> None:
    r = parse_resources({"memory": {"limit": 100, "swap": 200}, "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
                         "pids": {"limit": 5}})
    assert ("memory", "memory.limit_in_bytes", "100") in v1_writes(r)
    assert ("pids", "pids.max", "5") in v1_writes(r)
    v2 = dict((f, v) for _, f, v in v2_writes(r))
    assert v2 == {"memory.max": "100", "memory.swap.max": "100", "cpu.weight": "39", "cpu.max": "50000 100000",
                  "pids.max": "5"}
    with pytest.raises(InvalidArgumentError, match=r"memory\.limit"):
        parse_resources({"memory": {"limit": "x"}})


def test_mount_options() -> None:
    o = parse_options(["rbind", "ro", "nosuid", "rprivate", "mode=755", "size=1k"])
    assert o.flags == sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY | sc.MS_NOSUID
    assert o.propagation == (sc.MS_PRIVATE | sc.MS_REC,)
    assert o.data == "mode=755,size=1k"


def test_secure_join_stays_in_root(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "evil").symlink_to("/etc")
    (tmp_path / "a" / "up").symlink_to("../../../..")
    assert secure_join(str(tmp_path), "/a/evil/passwd") == str(tmp_path / "etc" / "passwd")
    assert secure_join(str(tmp_path), "/a/up/x") == str(tmp_path / "x")


def test_spec_json_round_trip() -> None:
    spec = RuntimeSpec.from_json(base_config(["sh"]))
    assert RuntimeSpec.from_json(spec_to_json(spec)) == spec


def test_cgroups_path_validation() -> None:
    assert validate_path("a/b") == "/a/b"
    # no systemd driver (SystemdCgroup is refused): like runc's cgroupfs driver, a literal name
    assert validate_path("system.slice:runwasm:x") == "/system.slice:runwasm:x"
    assert validate_path("/kubepods/pod1/cri-containerd:x") == "/kubepods/pod1/cri-containerd:x"
    with pytest.raises(InvalidArgumentError):
        validate_path("/a/../b")


def test_cgroup_v2_on_fake_cgroupfs(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids io\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    (tmp_path / "runwasm").mkdir()
    (tmp_path / "runwasm" / "cgroup.subtree_control").write_text("")
    cg = CgroupV2(path="/runwasm/c1", root=tmp_path)
    cg.create()
    leaf = tmp_path / "runwasm" / "c1"
    assert cg.created == [str(leaf)]
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu +io +memory +pids"
    for f, v in (("memory.max", "max"), ("pids.max", "max"), ("cpu.max", "max 100000"), ("cgroup.procs", "7\n"),
                 ("cpu.stat", "usage_usec 5\nuser_usec 3\nsystem_usec 2\n"), ("memory.current", "4096\n"),
                 ("memory.events", "oom 1\noom_kill 1\n"), ("pids.current", "1\n")):
        (leaf / f).write_text(v)
    cg.apply(parse_resources({"memory": {"limit": 1 << 20}, "pids": {"limit": 9}}))
    assert (leaf / "memory.max").read_text() == str(1 << 20)
    assert (leaf / "pids.max").read_text() == "9"
    assert cg.pids() == [7]
    m = read_metrics(cg)
    assert (m.version, m.cpu.usage_ns, m.memory.usage, m.memory.limit, m.memory.oom_kills, m.pids.limit) == \
        (2, 5000, 4096, 1 << 20, 1, 9)
