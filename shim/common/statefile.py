"""What the server records in a bundle so that ``delete`` can clean up after a dead server.

``<bundle>/runwasm.json`` holds the init pid with its kernel start time (to tell a live
workload from a recycled pid), the executor kind and the mounts the server made. The server
writes it at Create and updates it when the workload exits; ``delete`` reads it. Writes go
into the same file in place, whole or not at all (``runwasm.linux.record``): three per task, so
no temporary file and rename each time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runwasm.linux.record import write_record

FILENAME = "runwasm.json"


@dataclass(slots=True)
class BundleState:
    id: str
    kind: str = ""  # "wasm" or "linux"
    pid: int = 0
    pid_start_time: int = 0
    exit_status: int | None = None
    mounts: list[str] = field(default_factory=list)  # mount points made by the server, in order
    cgroup: str = ""
    verity: list[str] = field(default_factory=list)  # dm-verity devices opened for a private EROFS rootfs

    def save(self, bundle: Path) -> None:
        write_record(f"{bundle}/{FILENAME}", json.dumps(asdict(self)).encode())

    @classmethod
    def load(cls, bundle: Path) -> BundleState | None:
        try:
            doc = json.loads((bundle / FILENAME).read_text())
            return cls(**doc)
        except (OSError, ValueError, TypeError):
            return None


def process_start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot); 0 when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2 :].split()[19])
