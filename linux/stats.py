"""Cgroup metrics, read into one typed ``Metrics`` for both hierarchy versions.

The shim encodes ``Metrics`` into ``io.containerd.cgroups.v1.Metrics`` when ``version == 1``
and ``io.containerd.cgroups.v2.Metrics`` when ``version == 2`` (CRI accepts only those).
Times are nanoseconds whatever the kernel file's unit; a missing file reads as 0.

Values follow what runc's shim reports through containerd/cgroups, so tools comparing the two
see the same numbers: a memory/swap limit is the kernel's own value (v1 "unlimited" is the
page-rounded LONG_MAX the kernel prints; v2 ``max`` is 2**64-1), never 0. The kernel
(``memory.kmem.*``), kernel TCP (``memory.kmem.tcp.*``) and swap (``memory.memsw.*``) entries
of v1 are filled only where the cgroup has those files (``None`` otherwise), and so are blkio
(v1: the ``*_recursive`` files, else the ``throttle.*`` ones) and io (v2: ``io.stat``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runwasm.linux.cgroups import Cgroup, CgroupV1

_USER_HZ = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class CpuStats:
    usage_ns: int = 0
    user_ns: int = 0
    system_ns: int = 0
    per_cpu_ns: tuple[int, ...] = ()
    nr_periods: int = 0
    nr_throttled: int = 0
    throttled_ns: int = 0


UNLIMITED_V2 = 2**64 - 1
"""What containerd/cgroups reports for a v2 ``max`` (math.MaxUint64)."""


@dataclass(frozen=True, slots=True)
class MemEntry:
    """A v1 ``MemoryEntry``: one of usage (memory.*), swap (memsw.*), kernel (kmem.*), kernel_tcp."""

    limit: int = 0
    usage: int = 0
    max: int = 0
    failcnt: int = 0


@dataclass(frozen=True, slots=True)
class MemoryStats:
    usage: int = 0
    limit: int = 0          # the kernel's value (v1 LONG_MAX-ish or v2 2**64-1 when unlimited)
    max_usage: int = 0      # v1 only
    failcnt: int = 0        # v1 only
    swap_usage: int = 0
    swap_limit: int = 0
    oom_kills: int = 0
    stat: Mapping[str, int] = field(default_factory=dict)  # memory.stat verbatim
    swap: MemEntry | None = None        # v1, where memory.memsw.* exist
    kernel: MemEntry | None = None      # v1, where memory.kmem.* exist
    kernel_tcp: MemEntry | None = None  # v1, where memory.kmem.tcp.* exist


@dataclass(frozen=True, slots=True)
class BlkioEntry:
    """One line of a v1 blkio file: ``<major>:<minor> <Op> <value>``."""

    op: str
    device: str
    major: int
    minor: int
    value: int


@dataclass(frozen=True, slots=True)
class IoEntry:
    """One device line of v2 ``io.stat``."""

    major: int
    minor: int
    rbytes: int = 0
    wbytes: int = 0
    rios: int = 0
    wios: int = 0


@dataclass(frozen=True, slots=True)
class PidsStats:
    current: int = 0
    limit: int = 0  # 0 = max


@dataclass(frozen=True, slots=True)
class Metrics:
    version: int
    cpu: CpuStats
    memory: MemoryStats
    pids: PidsStats
    # v1: BlkIOStat field name (io_service_bytes_recursive, ...) -> entries; v2: io.stat
    blkio: Mapping[str, tuple[BlkioEntry, ...]] = field(default_factory=dict)
    io: tuple[IoEntry, ...] = ()


def _text(p: Path) -> str:
    try:
        return p.read_text()
    except OSError:
        return ""


def _int(p: Path, unlimited_above: int = 1 << 62) -> int:
    t = _text(p).strip()
    if not t or t == "max":
        return 0
    v = int(t)
    return 0 if v >= unlimited_above else v


def _raw(p: Path) -> int:
    """A limit as the kernel prints it; v2 ``max`` is 2**64-1 (as containerd/cgroups reads it)."""
    t = _text(p).strip()
    if t == "max":
        return UNLIMITED_V2
    return int(t) if t.lstrip("-").isdigit() else 0


def _entry(d: Path, prefix: str) -> MemEntry | None:
    """``<prefix>.{limit_in_bytes,usage_in_bytes,max_usage_in_bytes,failcnt}``; None when absent."""
    if not (d / f"{prefix}.usage_in_bytes").exists():
        return None
    return MemEntry(limit=_raw(d / f"{prefix}.limit_in_bytes"), usage=_int(d / f"{prefix}.usage_in_bytes"),
                    max=_int(d / f"{prefix}.max_usage_in_bytes"), failcnt=_int(d / f"{prefix}.failcnt"))


def _devname(major: int, minor: int) -> str:
    for line in _text(Path(f"/sys/dev/block/{major}:{minor}/uevent")).splitlines():
        if line.startswith("DEVNAME="):
            return "/dev/" + line.split("=", 1)[1]
    return ""


_V1_BLKIO = ("io_service_bytes_recursive", "io_serviced_recursive", "io_queued_recursive",
             "io_service_time_recursive", "io_wait_time_recursive", "io_merged_recursive", "time_recursive",
             "sectors_recursive")


def _blkio_file(p: Path) -> tuple[BlkioEntry, ...]:
    out = []
    for line in _text(p).splitlines():
        parts = line.split()
        if len(parts) < 2 or ":" not in parts[0]:
            continue  # the "Total N" line
        major, minor = (int(x) for x in parts[0].split(":", 1))
        op, value = (parts[1], parts[2]) if len(parts) == 3 else ("", parts[1])
        if value.isdigit():
            out.append(BlkioEntry(op, _devname(major, minor), major, minor, int(value)))
    return tuple(out)


def _v1_blkio(d: Path) -> dict[str, tuple[BlkioEntry, ...]]:
    """CFQ/BFQ-era ``blkio.<name>`` files when they hold data, else the throttle counters."""
    out = {name: entries for name in _V1_BLKIO if (entries := _blkio_file(d / f"blkio.{name}"))}
    if out:
        return out
    throttle = {"io_service_bytes_recursive": _blkio_file(d / "blkio.throttle.io_service_bytes_recursive")
                or _blkio_file(d / "blkio.throttle.io_service_bytes"),
                "io_serviced_recursive": _blkio_file(d / "blkio.throttle.io_serviced_recursive")
                or _blkio_file(d / "blkio.throttle.io_serviced")}
    return {k: v for k, v in throttle.items() if v}


def _v2_io(d: Path) -> tuple[IoEntry, ...]:
    out = []
    for line in _text(d / "io.stat").splitlines():
        dev, *fields = line.split()
        if ":" not in dev:
            continue
        major, minor = (int(x) for x in dev.split(":", 1))
        kv = {k: int(v) for k, _, v in (f.partition("=") for f in fields) if v.isdigit()}
        out.append(IoEntry(major, minor, kv.get("rbytes", 0), kv.get("wbytes", 0), kv.get("rios", 0),
                           kv.get("wios", 0)))
    return tuple(out)


def _kv(p: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in _text(p).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def read_metrics(cg: Cgroup) -> Metrics:
    return _v1(cg) if isinstance(cg, CgroupV1) else _v2(cg.dir())


def _v1(cg: CgroupV1) -> Metrics:
    def d(controller: str) -> Path:
        return cg.dir(controller) if controller in cg.hierarchies else Path("/nonexistent")

    acct, cpu, mem, pids, blkio = d("cpuacct"), d("cpu"), d("memory"), d("pids"), d("blkio")
    ticks = _kv(acct / "cpuacct.stat")
    cstat = _kv(cpu / "cpu.stat")
    per_cpu = tuple(int(x) for x in _text(acct / "cpuacct.usage_percpu").split())
    oom = _kv(mem / "memory.oom_control")
    swap = _entry(mem, "memory.memsw")
    # v1 reports "unlimited" as the page-rounded LONG_MAX: passed on as is, like runc's shim
    return Metrics(
        version=1,
        cpu=CpuStats(usage_ns=_int(acct / "cpuacct.usage"), user_ns=ticks.get("user", 0) * 10**9 // _USER_HZ,
                     system_ns=ticks.get("system", 0) * 10**9 // _USER_HZ, per_cpu_ns=per_cpu,
                     nr_periods=cstat.get("nr_periods", 0), nr_throttled=cstat.get("nr_throttled", 0),
                     throttled_ns=cstat.get("throttled_time", 0)),
        memory=MemoryStats(usage=_int(mem / "memory.usage_in_bytes"), limit=_raw(mem / "memory.limit_in_bytes"),
                           max_usage=_int(mem / "memory.max_usage_in_bytes"), failcnt=_int(mem / "memory.failcnt"),
                           swap_usage=swap.usage if swap else 0, swap_limit=swap.limit if swap else 0,
                           oom_kills=oom.get("oom_kill", 0), stat=_kv(mem / "memory.stat"), swap=swap,
                           kernel=_entry(mem, "memory.kmem"), kernel_tcp=_entry(mem, "memory.kmem.tcp")),
        pids=PidsStats(current=_int(pids / "pids.current"), limit=_int(pids / "pids.max")),
        blkio=_v1_blkio(blkio),
    )


def _v2(d: Path) -> Metrics:
    cstat = _kv(d / "cpu.stat")
    events = _kv(d / "memory.events")
    return Metrics(
        version=2,
        cpu=CpuStats(usage_ns=cstat.get("usage_usec", 0) * 1000, user_ns=cstat.get("user_usec", 0) * 1000,
                     system_ns=cstat.get("system_usec", 0) * 1000, nr_periods=cstat.get("nr_periods", 0),
                     nr_throttled=cstat.get("nr_throttled", 0), throttled_ns=cstat.get("throttled_usec", 0) * 1000),
        memory=MemoryStats(usage=_int(d / "memory.current"), limit=_raw(d / "memory.max"),
                           swap_usage=_int(d / "memory.swap.current"), swap_limit=_raw(d / "memory.swap.max"),
                           oom_kills=events.get("oom_kill", 0), stat=_kv(d / "memory.stat")),
        pids=PidsStats(current=_int(d / "pids.current"), limit=_int(d / "pids.max")),
        io=_v2_io(d),
    )

