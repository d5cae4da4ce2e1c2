"""One node server hosts the pods of a containerd (shim/server/node.py), through real containerd
1.6 and 2.3.4 and ``ctr``: both pods' workloads are children of one server process; each pod's
events reach containerd with its namespace and its log lines land in its own bundle's FIFO;
Shutdown of one pod leaves the other served; a SIGKILLed node server loses no exit status and
``delete`` cleans up after every pod it hosted."""

from __future__ import annotations

import copy
import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.daemon import Containerd, _alive, _env_of, wait_status
from tests.integration.watch import EventWatcher

pytestmark = pytest.mark.integration


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _servers(daemon: Containerd) -> list[int]:
    """Top shim servers (not their zygotes) of this daemon."""
    found = [p for p in daemon.our_processes() if b"_runwasm_serve" in _cmd(p)]
    return [p for p in found if _ppid(p) not in found]


def _cmd(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _until(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _address(daemon: Containerd, cid: str) -> str:
    """The ttrpc address of ``cid``'s shim, from the ``address`` file start wrote in its bundle."""
    for path in Path("/run").glob(f"containerd*/io.containerd.runtime.v2.task/{daemon.namespace}/{cid}/address"):
        return path.read_text()
    for path in daemon.dir.glob(f"**/io.containerd.runtime.v2.task/{daemon.namespace}/{cid}/address"):
        return path.read_text()
    raise AssertionError(f"no bundle address file for {cid}")


def test_two_pods_share_one_server_and_shut_down_separately(containerd: Containerd,
                                                            wasm_images: dict[str, str]) -> None:
    a, b = "node-a", "node-b"
    with EventWatcher(containerd) as events:
        for cid in (a, b):
            containerd.run(wasm_images["sleep"], cid, rm=False, detach=True, check=True)
        pid_a, _ = wait_status(containerd, a, "RUNNING")
        pid_b, _ = wait_status(containerd, b, "RUNNING")
        (server,) = _servers(containerd)
        assert _ppid(pid_a) == server
        assert _ppid(pid_b) == server
        sock_a = _address(containerd, a).removeprefix("unix://")
        assert sock_a != _address(containerd, b).removeprefix("unix://")  # a listener per pod
        assert os.path.exists(sock_a)
        for cid in (a, b):  # events of each group, with our namespace (the watcher filters by it)
            events.wait_for("/tasks/start", cid, timeout=15)
        containerd.ctr("task", "kill", "-s", "SIGKILL", a)
        assert events.wait_for("/tasks/exit", a, timeout=15).body["exit_status"] == 137
        assert "exit code 137" in containerd.ctr("task", "rm", a).output
        containerd.ctr("containers", "rm", a)  # containerd shuts pod a's group down
        _until(lambda: not os.path.exists(sock_a), 15, "pod a's socket to be removed by its Shutdown")
        assert _alive(server)
        assert containerd.tasks()[b] == (pid_b, "RUNNING")
        containerd.ctr("task", "kill", "-s", "SIGTERM", b)
        assert events.wait_for("/tasks/exit", b, timeout=15).body["exit_status"] == 128 + signal.SIGTERM
        assert "exit code 143" in containerd.ctr("task", "rm", b).output
        containerd.ctr("containers", "rm", b)
    _until(lambda: not _alive(server), 15, f"node server {server} to exit after its last pod")
    log = containerd.log_path.read_text(errors="replace")
    for cid in (a, b):  # each group's lines went to its own bundle's log FIFO (containerd copies it)
        assert any(f"serving group {containerd.namespace}/{cid} " in line and f" id={cid}" in line
                   for line in log.splitlines()), f"no log line of {cid} in containerd's log"


def test_sigkilled_node_server_loses_no_exit_status(containerd: Containerd, wasm_images: dict[str, str]) -> None:
    ids = ["node-k1", "node-k2"]
    for cid in ids:
        containerd.run(wasm_images["spin"], cid, rm=False, detach=True, check=True)
    pids = [wait_status(containerd, cid, "RUNNING")[0] for cid in ids]
    (server,) = _servers(containerd)
    assert all(_ppid(p) == server for p in pids)
    assert _env_of(server).get("TTRPC_ADDRESS") == containerd.ttrpc_address
    with EventWatcher(containerd) as events:
        os.kill(server, signal.SIGKILL)
        # containerd sees each pod's shim connection drop and runs `delete` for each
        for cid in ids:
            assert events.wait_for("/tasks/exit", cid, timeout=30).body["exit_status"] == 137
    _until(lambda: not any(_alive(p) for p in pids), 15, "the workloads to be killed by delete")
    for cid in ids:
        containerd.ctr("task", "rm", "-f", cid, check=False)
        assert cid not in containerd.tasks()
        containerd.ctr("containers", "rm", cid)
    _until(lambda: not containerd.our_processes(), 15, "no shim process of this daemon to be left")
    # the same ids run again (start replaces the stale sockets) on a new node server
    for cid in ids:
        containerd.run(wasm_images["exit7"], cid, rm=True, check=False)
    assert not containerd.tasks()


def test_pods_of_two_namespaces_share_the_server_and_each_gets_its_own_events(
        containerd: Containerd, wasm_images: dict[str, str]) -> None:
    other = copy.copy(containerd)  # the same daemon seen from a second namespace
    other.namespace = other.cgroup_name = f"{containerd.namespace}-b"
    other.ids = set()
    cid = "node-ns"
    try:
        other.ctr("images", "import", "--all-platforms", str(_image_tar(containerd, wasm_images["sleep"])))
        with EventWatcher(containerd) as ours, EventWatcher(other) as theirs:
            containerd.run(wasm_images["sleep"], cid, rm=False, detach=True, check=True)
            other.run(wasm_images["sleep"], cid, rm=False, detach=True, check=True)
            pid_ours, _ = wait_status(containerd, cid, "RUNNING")
            pid_theirs, _ = wait_status(other, cid, "RUNNING")
            (server,) = _servers(containerd)
            assert _ppid(pid_ours) == _ppid(pid_theirs) == server
            containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
            other.ctr("task", "kill", "-s", "SIGTERM", cid)
            # each watcher sees only its namespace's envelopes: each exit came with its own
            assert ours.wait_for("/tasks/exit", cid, timeout=15).body["exit_status"] == 137
            assert theirs.wait_for("/tasks/exit", cid, timeout=15).body["exit_status"] == 143
            assert all(e.namespace == containerd.namespace for e in ours.events)
            assert all(e.namespace == other.namespace for e in theirs.events)
    finally:
        other.remove_all_containers()
        other.ctr("images", "rm", wasm_images["sleep"], check=False)
        other._remove_cgroups()
        containerd.remove_all_containers()
    _until(lambda: not containerd.our_processes(), 15, "the node server to exit after both pods")


def _image_tar(daemon: Containerd, ref: str) -> Path:
    """Export ``ref`` from ``daemon``'s namespace, to import it into another one."""
    tar = daemon.dir / "node-ns-image.tar"
    daemon.ctr("images", "export", "--all-platforms", str(tar), ref)
    return tar
