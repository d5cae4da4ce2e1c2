"""``Reaper`` matches exits to the exact process, with real children and a real pid collision.

Each scenario runs as pid 1 of a private pid namespace (``unshare --pid --fork --mount-proc``),
where nothing else forks: writing ``/proc/sys/kernel/ns_last_pid`` makes the next fork take a
chosen pid, so a new process gets the very pid of an orphan whose exit was reaped earlier.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest

from runwasm.shim.common.statefile import process_start_time
from runwasm.shim.server.reaper import Reaper

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.privileged


def _wait_zombie(pid: int) -> None:
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # blocks until it exited; leaves it to the reaper


def _orphan(code: int) -> int:
    """A grandchild re-parented to us (pid 1) whose parent has been reaped; it exits with ``code``
    once released. Returns its pid, after it exited (a zombie only the reaper may collect)."""
    r, w = os.pipe()
    mid = os.fork()
    if mid == 0:
        pid = os.fork()
        if pid == 0:
            os._exit(code)
        os.write(w, str(pid).encode())
        os._exit(0)
    os.close(w)
    pid = int(os.read(r, 32))
    os.close(r)
    os.waitpid(mid, 0)
    _wait_zombie(pid)
    return pid


def _fork_with_pid(pid: int) -> tuple[int, int]:
    """Fork a child that takes ``pid`` and exits 5 when the returned pipe end is closed."""
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(5)
    os.close(r)
    return child, w


def collision_scenario(during_spawn: bool) -> dict[str, Any]:
    """An orphan exits unwatched (during a spawn or not); a new process then gets its pid and
    is watched: the orphan's exit must not be handed to it."""
    reaper = Reaper()
    spawn: AbstractContextManager[None] = reaper.spawning() if during_spawn else nullcontext()
    with spawn:
        old = _orphan(3)
        old_start = process_start_time(old)  # a zombie's stat is still there
        reaper.reap()
        kept = reaper.unclaimed
        # a real pid wrap takes far longer than one clock tick (the start time's unit): make the
        # forced collision happen in a later tick too, or the two processes are indistinguishable
        time.sleep(0.05)
        new, release = _fork_with_pid(old)
        start_time = process_start_time(new)
    got: list[tuple[int, int]] = []
    reaper.watch(new, start_time, lambda pid, status, _when: got.append((pid, status)))
    early = list(got)
    os.close(release)
    _wait_zombie(new)
    reaper.reap()
    return {"old": old, "new": new, "kept": kept, "early": early, "got": got,
            "distinct_start": start_time != old_start}


def early_exit_scenario() -> dict[str, Any]:
    """A process spawned, exited and reaped before it is watched still gets its own exit."""
    reaper = Reaper()
    with reaper.spawning():
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os._exit(9)
        start_time = process_start_time(pid)
        _wait_zombie(pid)
        reaper.reap()
    got: list[tuple[int, int]] = []
    reaper.watch(pid, start_time, lambda p, status, _when: got.append((p, status)))
    return {"pid": pid, "got": got}


def _in_pid_namespace(call: str) -> dict[str, Any]:
    if shutil.which("unshare") is None:
        pytest.skip("util-linux unshare(1) is not installed")
    code = f"import json; from tests.shim.server.test_reaper import *; print(json.dumps({call}))"
    p = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
                       cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr.decode()
    out: dict[str, Any] = json.loads(p.stdout.decode().strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("during_spawn", [False, True], ids=["idle", "during-spawn"])
def test_an_orphan_exit_is_never_handed_to_a_new_process_with_its_pid(during_spawn: bool) -> None:
    res = _in_pid_namespace(f"collision_scenario({during_spawn})")
    assert res["new"] == res["old"]  # the collision really happened
    assert res["distinct_start"]
    assert res["kept"] == (1 if during_spawn else 0)  # unwatched orphan exits are dropped when idle
    assert res["early"] == []  # before the fix: the orphan's status 3, at once
    assert res["got"] == [[res["new"], 5]]


def test_an_exit_reaped_before_the_watch_is_delivered() -> None:
    res = _in_pid_namespace("early_exit_scenario()")
    assert res["got"] == [[res["pid"], 9]]
