"""linux/cgroups.py on the real cgroup v1 hierarchies of this machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runwasm.linux.cgroups import CgroupV1, v1_hierarchies


def test_v1_cpuset_parent_made_but_not_filled_by_another_shim() -> None:
    """Simultaneous first containers of a namespace: one shim has made the namespace's cpuset
    directory (empty cpus/mems) but not filled it yet when another creates its container's cgroup
    below it. The second must fill the existing parent first, or its own cpuset copies the empty
    one and joining it fails with ENOSPC (seen with 8 concurrent ``ctr run``)."""
    hier = v1_hierarchies()
    if "cpuset" not in hier:
        pytest.skip("no cgroup v1 cpuset hierarchy on this machine")
    top = f"rwtest-cpuset-{os.getpid()}"
    parent = hier["cpuset"] / top
    parent.mkdir()  # what the other shim did: a new v1 cpuset starts empty
    cg = CgroupV1(f"/{top}/child", {"cpuset": hier["cpuset"]})
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert (parent / "cpuset.cpus").read_text().strip() == ""
        cg.create()
        child = parent / "child"
        for f in ("cpuset.cpus", "cpuset.mems"):
            assert (child / f).read_text().strip() == (hier["cpuset"] / f).read_text().strip()
            assert (parent / f).read_text().strip() == (hier["cpuset"] / f).read_text().strip()
        assert cg.created == [str(child)]  # the parent is the other shim's to remove
        (child / "cgroup.procs").write_text(str(proc.pid))  # ENOSPC before the fix
    finally:
        proc.kill()
        proc.wait()
        for d in (parent / "child", parent):
            if d.exists():
                _rmdir_when_empty(d)


def _rmdir_when_empty(d: Path) -> None:
    import time

    for _ in range(200):
        try:
            d.rmdir()
            return
        except OSError:
            time.sleep(0.01)
    d.rmdir()
