"""What the server records in a bundle so that ``delete`` can clean up after a dead server.

``<bundle>/runwasm.json`` holds the init pid with its kernel start time (to tell a live
workload from a recycled pid), the executor kind and the mounts the server made. The server
writes it at Create and updates it when the workload exits; ``delete`` reads it. Writes go
into the same file in place, whole or not at all (``runwasm.linux.record``): three per task
(four when the server mounted the rootfs: the mounts are recorded first), so no temporary file
and rename each time.

``<bundle>/runwasm-released`` (``RELEASED_FILE``) appears once the server has released
everything of the container itself (its teardown after Delete, or after a failed Create, finished
without an error): it holds fields 1-2 of the ``DeleteResponse`` the ``delete`` action would
print (pid, exit status; ``wire`` encoding), so the native launcher (``scripts/launcher.c``)
answers ``delete`` from it without running the cleanup, which has nothing left to do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from runwasm.linux.record import write_record

FILENAME = "runwasm.json"
RELEASED_FILE = "runwasm-released"
DEAD_STATUS = 137  # upstream's exit status for a process whose status is unknown (SIGKILL)


@dataclass(slots=True)
class BundleState:
    """What the shim records in the bundle about a container (``runwasm.json``)."""

    id: str
    kind: str = ""  # "wasm" or "linux"
    pid: int = 0
    pid_start_time: int = 0
    exit_status: int | None = None
    mounts: list[str] = field(default_factory=list)  # mount points made by the server, in order
    cgroup: str = ""
    verity: list[str] = field(default_factory=list)  # dm-verity devices opened for a private EROFS rootfs

    def save(self, bundle: Path) -> None:
        # the fields spelled out: dataclasses.asdict deep-copies every value, ~0.15 ms a call,
        # and a task saves its state four times
        doc = {"id": self.id, "kind": self.kind, "pid": self.pid, "pid_start_time": self.pid_start_time,
               "exit_status": self.exit_status, "mounts": list(self.mounts), "cgroup": self.cgroup,
               "verity": list(self.verity)}
        write_record(f"{bundle}/{FILENAME}", json.dumps(doc).encode())

    def response_fields(self) -> bytes:
        """Fields 1-2 (pid, exit_status) of the ``DeleteResponse`` for this state."""
        from runwasm.shim.common import wire

        status = DEAD_STATUS if self.exit_status is None else self.exit_status
        return wire.enc_int(1, self.pid) + wire.enc_int(2, status)

    def mark_released(self, bundle: Path) -> None:
        """Record that the server released everything of this container (see module doc)."""
        # whole or absent for the launcher, which answers `delete` from any file it finds there
        tmp = f"{bundle}/{RELEASED_FILE}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, self.response_fields())
        finally:
            os.close(fd)
        os.replace(tmp, f"{bundle}/{RELEASED_FILE}")

    @classmethod
    def load(cls, bundle: Path) -> BundleState | None:
        try:
            doc = json.loads((bundle / FILENAME).read_text())
            return cls(**doc)
        except (OSError, ValueError, TypeError):
            return None


def process_start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot); 0 when the process is gone."""
    try:  # os calls, not pathlib: the reaper asks once per exit
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            stat = os.read(fd, 4096).decode()
        finally:
            os.close(fd)
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2 :].split()[19])
