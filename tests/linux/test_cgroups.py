"""linux/cgroups.py on the real cgroup v1 hierarchies of this machine."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from runwasm.linux.cgroup_join import self_join_file
from runwasm.linux.cgroups import CgroupV1, v1_hierarchies
from tests.linux.harness import in_child


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



def _v1_cgroup(name: str) -> CgroupV1:
    if not v1_hierarchies():
        pytest.skip("no cgroup v1 hierarchies on this machine")
    cg = CgroupV1(f"/{name}-{os.getpid()}")
    cg.create()
    return cg


def test_a_single_threaded_process_joins_itself_through_tasks_in_every_hierarchy() -> None:
    """``self_join_file`` names the v1 ``tasks`` file for a process of one thread (the kernel
    then skips its global threadgroup lock) and the whole process lands in the cgroup: every
    hierarchy's ``cgroup.procs`` lists it."""
    cg = _v1_cgroup("rwtest-selfjoin")
    try:
        def join() -> str:
            used = []
            for procs in cg.procs_files():
                path = self_join_file(procs)
                used.append(path.rpartition("/")[2])
                with open(path, "w") as f:
                    f.write("0")
            inside = all(str(os.getpid()) in Path(p).read_text().split() for p in cg.procs_files())
            return f"{','.join(sorted(set(used)))} {inside}"

        assert in_child(join) == "tasks True"
    finally:
        cg.destroy()
    assert not any(Path(d).exists() for d in cg.dirs().values())


def test_a_process_with_threads_joins_through_cgroup_procs_so_all_its_threads_move() -> None:
    """With a second thread, ``tasks`` would move only the caller: ``self_join_file`` keeps
    ``cgroup.procs`` and every thread is in the cgroup afterwards."""
    cg = _v1_cgroup("rwtest-selfjoin-threads")
    try:
        def join() -> str:
            stop = threading.Event()
            t = threading.Thread(target=stop.wait)
            t.start()
            try:
                names = set()
                for procs in cg.procs_files():
                    path = self_join_file(procs)
                    names.add(path.rpartition("/")[2])
                    with open(path, "w") as f:
                        f.write("0")
                tids = set(os.listdir("/proc/self/task"))
                moved = all(tids <= set(Path(p).with_name("tasks").read_text().split()) for p in cg.procs_files())
            finally:
                stop.set()
                t.join()
            return f"{','.join(sorted(names))} {len(tids)} {moved}"

        assert in_child(join) == "cgroup.procs 2 True"
    finally:
        cg.destroy()


def test_self_join_file_keeps_a_file_that_is_not_a_v1_procs_file(tmp_path: Path) -> None:
    assert self_join_file(str(tmp_path / "cgroup.procs")) == str(tmp_path / "cgroup.procs")  # no tasks beside it (v2)
    assert self_join_file("/x/cgroup.threads") == "/x/cgroup.threads"


def test_the_mount_table_is_read_again_only_after_a_mount_or_unmount(tmp_path: Path) -> None:
    """``v1_hierarchies`` keeps /proc/self/mountinfo until the kernel flags a change (POLLPRI):
    a mount made since the last call is seen, and so is its unmount."""
    from runwasm.linux.cgroups import _MountTable

    table = _MountTable()
    first = table.text()
    assert table.text() is first  # nothing changed: not read again
    target = tmp_path / "mnt"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "rwtest-mounttable", str(target)], check=True)
    try:
        assert f" {target} " in table.text()
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert f" {target} " not in table.text()
    assert table.v1_hierarchies() == v1_hierarchies(Path("/proc/self/mountinfo").read_text())


def test_procs_files_name_each_hierarchy_once() -> None:
    """One ``cgroup.procs`` per mounted hierarchy (co-mounted controllers share one), also for the
    root cgroup, with the path's slashes normalised as the pathlib version did."""
    cpu = Path("/sys/fs/cgroup/cpu,cpuacct")
    hier = {"cpu": cpu, "cpuacct": cpu, "memory": Path("/sys/fs/cgroup/memory")}
    assert CgroupV1("/runwasm/ns/c1/", hierarchies=hier).procs_files() == [
        "/sys/fs/cgroup/cpu,cpuacct/runwasm/ns/c1/cgroup.procs", "/sys/fs/cgroup/memory/runwasm/ns/c1/cgroup.procs"]
    assert CgroupV1("/", hierarchies=hier).procs_files() == [
        "/sys/fs/cgroup/cpu,cpuacct/cgroup.procs", "/sys/fs/cgroup/memory/cgroup.procs"]
    assert CgroupV1("/x", hierarchies=hier).procs_files() == sorted(str(d / "cgroup.procs") for d in
                                                                   set(CgroupV1("/x", hierarchies=hier).dirs().values()))
