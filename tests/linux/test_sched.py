"""``runwasm.linux.sched`` in a forked child: the kernel really has the scheduler, I/O priority and
memory policy afterwards, and a value it refuses is a SetupError naming the field."""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import pytest

from runwasm.linux import sched
from runwasm.linux.errors import SetupError
from runwasm.oci.spec_sched import IoPriority, MemoryPolicy, Scheduler
from tests.linux.harness import in_child


def _ioprio_get() -> int:
    nr = {"x86_64": 252, "aarch64": 31}[platform.machine()]
    return int(ctypes.CDLL(None, use_errno=True).syscall(ctypes.c_long(nr), ctypes.c_int(1), ctypes.c_int(0)))


def test_applies_scheduler_io_priority_and_memory_policy() -> None:
    if not Path("/proc/self/numa_maps").exists():
        pytest.skip("kernel without NUMA (no /proc/self/numa_maps)")

    def child() -> str:
        sched.set_scheduler(Scheduler("SCHED_BATCH", nice=5))
        sched.set_io_priority(IoPriority("IOPRIO_CLASS_IDLE", 0))
        sched.set_memory_policy(MemoryPolicy("MPOL_BIND", (0,)))
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        numa = Path("/proc/self/numa_maps").read_text().splitlines()[0].split()[1]
        return f"{stat[16]} {stat[38]} {_ioprio_get() >> 13} {numa}"

    assert in_child(child) == "5 3 3 bind:0"


def test_refused_values_name_the_field() -> None:
    out = in_child(lambda: (sched.set_scheduler(Scheduler("SCHED_ISO")), "applied")[1])
    assert out.startswith(f"{SetupError.__name__}: failed to apply process.scheduler policy=SCHED_ISO"), out
    assert "sched_setattr: [errno 22]" in out
    out = in_child(lambda: (sched.set_memory_policy(MemoryPolicy("MPOL_BIND", (1023,))), "applied")[1])
    assert "failed to apply linux.memoryPolicy mode=MPOL_BIND nodes='1023'" in out, out
