"""OOM notification for a container's memory cgroup, as an fd for the shim's event loop.

Usage (asyncio)::

    w = open_oom_watcher(cgroup)
    loop.add_reader(w.fileno(), lambda: w.read() and publish_task_oom())
    ...
    loop.remove_reader(w.fileno()); w.close()

``read()`` never blocks (the fd is non-blocking) and returns how many OOM kills happened
since the previous call; 0 means a spurious wake-up (v1 also signals when the cgroup is
removed: remove the reader then). Call it once more after the init process is reaped and
before publishing TaskExit, so a kill that raced the exit is still reported first.

- v1: an eventfd registered through ``cgroup.event_control`` on ``memory.oom_control``; the
  count comes from ``oom_kill`` in ``memory.oom_control`` (kernel >= 4.13).
- v2: inotify IN_MODIFY on ``memory.events``; the count is its ``oom_kill`` field.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from runwasm.linux import syscalls
from runwasm.linux.cgroups import Cgroup, CgroupV1
from runwasm.linux.errors import SetupError, UnavailableError


def _oom_kills(path: Path) -> int:
    try:  # os calls, not pathlib's read_text: read at every Create and every exit
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            text = os.read(fd, 65536).decode()
        finally:
            os.close(fd)
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill":
                return int(v)
    except OSError:
        pass
    return 0


class OomWatcher:
    def __init__(self, fd: int, counter: Path, extra_fd: int = -1) -> None:
        self._fd = fd
        self._extra = extra_fd
        self._counter = counter
        self._seen = _oom_kills(counter)

    def fileno(self) -> int:
        return self._fd

    def read(self) -> int:
        events = 0
        try:
            data = os.read(self._fd, 4096)
            events = int.from_bytes(data[:8], "little") if self._extra >= 0 else 1
        except BlockingIOError:
            pass
        now = _oom_kills(self._counter)
        # v1 signals when the OOM starts; the kill (and its counter) follows shortly after
        deadline = time.monotonic() + 0.2
        while events and now <= self._seen and self._counter.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
            now = _oom_kills(self._counter)
        new = max(0, now - self._seen)
        self._seen = max(now, self._seen)
        if new == 0 and events and self._extra >= 0 and self._counter.exists():
            new = 1  # an OOM without a kill yet (e.g. oom_kill_disable): still an OOM event
        return new

    def close(self) -> None:
        for fd in (self._fd, self._extra):
            if fd >= 0:
                os.close(fd)
        self._fd = self._extra = -1


def open_oom_watcher(cg: Cgroup) -> OomWatcher:
    """Start watching; raises UnavailableError when the memory controller is missing."""
    if isinstance(cg, CgroupV1):
        if "memory" not in cg.hierarchies:
            raise UnavailableError("failed to watch for OOM: no cgroup v1 memory hierarchy")
        d = cg.dir("memory")
        try:
            efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            ocfd = os.open(d / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            fd = os.open(d / "cgroup.event_control", os.O_WRONLY | os.O_CLOEXEC)  # os calls: once per task
            try:
                os.write(fd, f"{efd} {ocfd}".encode())
            finally:
                os.close(fd)
        except OSError as err:
            raise SetupError(f"failed to register OOM eventfd on {str(d)!r}: {err}") from err
        return OomWatcher(efd, d / "memory.oom_control", ocfd)
    events = cg.dir() / "memory.events"
    ifd = syscalls.inotify_init1(syscalls.IN_CLOEXEC | syscalls.IN_NONBLOCK)
    try:
        syscalls.inotify_add_watch(ifd, str(events), syscalls.IN_MODIFY)
    except OSError as err:
        os.close(ifd)
        raise UnavailableError(f"failed to watch {str(events)!r} for OOM: {err}") from err
    return OomWatcher(ifd, events)
