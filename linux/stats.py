"""Cgroup metrics, read into one typed ``Metrics`` for both hierarchy versions.

The shim encodes ``Metrics`` into ``io.containerd.cgroups.v1.Metrics`` when ``version == 1``
and ``io.containerd.cgroups.v2.Metrics`` when ``version == 2`` (CRI accepts only those).
Times are nanoseconds whatever the kernel file's unit; a missing file reads as 0.
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


@dataclass(frozen=True, slots=True)
class MemoryStats:
    usage: int = 0
    limit: int = 0          # 0 = unlimited
    max_usage: int = 0      # v1 only
    failcnt: int = 0        # v1 only
    swap_usage: int = 0
    swap_limit: int = 0
    oom_kills: int = 0
    stat: Mapping[str, int] = field(default_factory=dict)  # memory.stat verbatim


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

    acct, cpu, mem, pids = d("cpuacct"), d("cpu"), d("memory"), d("pids")
    ticks = _kv(acct / "cpuacct.stat")
    cstat = _kv(cpu / "cpu.stat")
    per_cpu = tuple(int(x) for x in _text(acct / "cpuacct.usage_percpu").split())
    oom = _kv(mem / "memory.oom_control")
    # v1 reports "unlimited" as the page-rounded LONG_MAX
    return Metrics(
        version=1,
        cpu=CpuStats(usage_ns=_int(acct / "cpuacct.usage"), user_ns=ticks.get("user", 0) * 10**9 // _USER_HZ,
                     system_ns=ticks.get("system", 0) * 10**9 // _USER_HZ, per_cpu_ns=per_cpu,
                     nr_periods=cstat.get("nr_periods", 0), nr_throttled=cstat.get("nr_throttled", 0),
                     throttled_ns=cstat.get("throttled_time", 0)),
        memory=MemoryStats(usage=_int(mem / "memory.usage_in_bytes"), limit=_int(mem / "memory.limit_in_bytes"),
                           max_usage=_int(mem / "memory.max_usage_in_bytes"), failcnt=_int(mem / "memory.failcnt"),
                           swap_usage=_int(mem / "memory.memsw.usage_in_bytes"),
                           swap_limit=_int(mem / "memory.memsw.limit_in_bytes"),
                           oom_kills=oom.get("oom_kill", 0), stat=_kv(mem / "memory.stat")),
        pids=PidsStats(current=_int(pids / "pids.current"), limit=_int(pids / "pids.max")),
    )


def _v2(d: Path) -> Metrics:
    cstat = _kv(d / "cpu.stat")
    events = _kv(d / "memory.events")
    return Metrics(
        version=2,
        cpu=CpuStats(usage_ns=cstat.get("usage_usec", 0) * 1000, user_ns=cstat.get("user_usec", 0) * 1000,
                     system_ns=cstat.get("system_usec", 0) * 1000, nr_periods=cstat.get("nr_periods", 0),
                     nr_throttled=cstat.get("nr_throttled", 0), throttled_ns=cstat.get("throttled_usec", 0) * 1000),
        memory=MemoryStats(usage=_int(d / "memory.current"), limit=_int(d / "memory.max"),
                           swap_usage=_int(d / "memory.swap.current"), swap_limit=_int(d / "memory.swap.max"),
                           oom_kills=events.get("oom_kill", 0), stat=_kv(d / "memory.stat")),
        pids=PidsStats(current=_int(d / "pids.current"), limit=_int(d / "pids.max")),
    )

