"""``process.scheduler`` (sched_setattr), ``process.ioPriority`` (ioprio_set) and
``linux.memoryPolicy`` (set_mempolicy), applied to the calling process before it runs the
workload; all three are inherited across execve and by the threads a Wasm guest's runtime starts.

Scheduler and I/O priority go with the rlimits, before capabilities are dropped: a real-time
policy, a negative nice value and the RT I/O class need CAP_SYS_NICE/CAP_SYS_ADMIN. The memory
policy needs no privilege. A value the kernel refuses (SCHED_ISO, which Linux never merged; a
node outside the allowed set; a flag this kernel lacks) is a SetupError naming the spec field,
the value and errno: never a silent fallback.
"""

from __future__ import annotations

import ctypes
import os

from runwasm.linux.errors import SetupError
from runwasm.linux.syscalls import _libc
from runwasm.oci.spec_sched import MAX_NUMA_NODE, IoPriority, MemoryPolicy, Scheduler

# (x86_64, aarch64) syscall numbers
_NR = {"x86_64": {"sched_setattr": 314, "ioprio_set": 251, "set_mempolicy": 238},
       "aarch64": {"sched_setattr": 274, "ioprio_set": 30, "set_mempolicy": 237}}

POLICY = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3, "SCHED_ISO": 4,
          "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}
SCHED_FLAG = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02, "SCHED_FLAG_DL_OVERRUN": 0x04,
              "SCHED_FLAG_KEEP_POLICY": 0x08, "SCHED_FLAG_KEEP_PARAMS": 0x10,
              "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20, "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}
IOPRIO_CLASS = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
IOPRIO_CLASS_SHIFT = 13
IOPRIO_WHO_PROCESS = 1
MPOL_MODE = {"MPOL_DEFAULT": 0, "MPOL_PREFERRED": 1, "MPOL_BIND": 2, "MPOL_INTERLEAVE": 3, "MPOL_LOCAL": 4,
             "MPOL_PREFERRED_MANY": 5, "MPOL_WEIGHTED_INTERLEAVE": 6}
MPOL_FLAG = {"MPOL_F_STATIC_NODES": 1 << 15, "MPOL_F_RELATIVE_NODES": 1 << 14, "MPOL_F_NUMA_BALANCING": 1 << 13}
_MASK_WORDS = (MAX_NUMA_NODE + 1) // 64


class SchedAttr(ctypes.Structure):
    """``struct sched_attr`` (SCHED_ATTR_SIZE_VER1, 56 bytes)."""

    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
                ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32),
                ("sched_runtime", ctypes.c_uint64), ("sched_deadline", ctypes.c_uint64),
                ("sched_period", ctypes.c_uint64), ("sched_util_min", ctypes.c_uint32),
                ("sched_util_max", ctypes.c_uint32)]


def _nr(name: str) -> int:
    table = _NR.get(os.uname().machine)
    if table is None:
        raise SetupError(f"failed to apply {name}: syscall number unknown on {os.uname().machine}")
    return table[name]


def _call(name: str, field: str, shown: str, *args: object) -> None:
    if _libc.syscall(ctypes.c_long(_nr(name)), *args) == -1:
        err = ctypes.get_errno()
        raise SetupError(f"failed to apply {field} {shown}: {name}: [errno {err}] {os.strerror(err)}")


def set_scheduler(s: Scheduler | None) -> None:
    if s is None:
        return
    flags = 0
    for f in s.flags:
        flags |= SCHED_FLAG[f]
    attr = SchedAttr(size=ctypes.sizeof(SchedAttr), sched_policy=POLICY[s.policy], sched_flags=flags,
                     sched_nice=s.nice, sched_priority=s.priority, sched_runtime=s.runtime,
                     sched_deadline=s.deadline, sched_period=s.period)
    shown = f"policy={s.policy} nice={s.nice} priority={s.priority} flags={list(s.flags)}"
    _call("sched_setattr", "process.scheduler", shown, ctypes.c_int(0), ctypes.byref(attr), ctypes.c_uint(0))


def set_io_priority(p: IoPriority | None) -> None:
    if p is None:
        return
    value = (IOPRIO_CLASS[p.io_class] << IOPRIO_CLASS_SHIFT) | p.priority
    _call("ioprio_set", "process.ioPriority", f"class={p.io_class} priority={p.priority}",
          ctypes.c_int(IOPRIO_WHO_PROCESS), ctypes.c_int(0), ctypes.c_int(value))


def set_memory_policy(mp: MemoryPolicy | None) -> None:
    if mp is None:
        return
    mode = MPOL_MODE[mp.mode]
    for f in mp.flags:
        mode |= MPOL_FLAG[f]
    mask = (ctypes.c_uint64 * _MASK_WORDS)()
    for node in mp.nodes:
        mask[node // 64] |= 1 << (node % 64)
    nodes = ",".join(map(str, mp.nodes))
    # maxnode counts bits + 1 (the kernel reads maxnode - 1 bits); no nodes = a NULL mask
    ptr = ctypes.byref(mask) if mp.nodes else None
    _call("set_mempolicy", "linux.memoryPolicy", f"mode={mp.mode} nodes={nodes!r} flags={list(mp.flags)}",
          ctypes.c_int(mode), ptr, ctypes.c_ulong(_MASK_WORDS * 64 + 1 if mp.nodes else 0))
