"""Runtime-spec 1.2 fields that NRI plugins set: ``process.scheduler``, ``process.ioPriority``,
``linux.memoryPolicy``, ``linux.netDevices`` (typed, parsed at the boundary like the rest of
``runtime_spec``), plus the spec fields runwasm knows but cannot honour, refused when set.

Names and ranges are the runtime spec's (config.md, config-linux.md); a value outside them is a
``SpecError`` naming the JSON path, so a typo never reaches the kernel as a different meaning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runwasm.oci.spec_reader import U64_MAX, SpecReader

SCHED_POLICIES = ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_ISO", "SCHED_IDLE",
                  "SCHED_DEADLINE")
SCHED_FLAGS = ("SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_RECLAIM", "SCHED_FLAG_DL_OVERRUN",
               "SCHED_FLAG_KEEP_POLICY", "SCHED_FLAG_KEEP_PARAMS", "SCHED_FLAG_UTIL_CLAMP_MIN",
               "SCHED_FLAG_UTIL_CLAMP_MAX")
IOPRIO_CLASSES = ("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE")
MPOL_MODES = ("MPOL_DEFAULT", "MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_WEIGHTED_INTERLEAVE", "MPOL_PREFERRED",
              "MPOL_PREFERRED_MANY", "MPOL_LOCAL")
MPOL_FLAGS = ("MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES")
MAX_NUMA_NODE = 1023
"""Nodes beyond this are refused (the nodemask runwasm passes to set_mempolicy has 1024 bits)."""
_NODES = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_IFNAME = re.compile(r"^[^/\s:]{1,15}$")

# spec fields runwasm parses but cannot honour: refused when set (JSON key -> why)
REFUSED_PROCESS = {
    "execCPUAffinity": "runwasm does not pin processes to CPUs (use linux.resources.cpu.cpus)",
    "commandLine": "a Windows field",
}
REFUSED_LINUX = {
    "intelRdt": "runwasm does not manage resctrl (Intel RDT) groups",
    "personality": "runwasm does not set an execution domain (personality(2))",
    "timeOffsets": "runwasm does not create time namespaces",
}


@dataclass(frozen=True, slots=True)
class Scheduler:
    """``process.scheduler`` of the runtime spec."""

    policy: str
    nice: int = 0
    priority: int = 0
    flags: tuple[str, ...] = ()
    runtime: int = 0
    deadline: int = 0
    period: int = 0


@dataclass(frozen=True, slots=True)
class IoPriority:
    """``process.ioPriority`` of the runtime spec."""

    io_class: str
    priority: int = 0


@dataclass(frozen=True, slots=True)
class MemoryPolicy:
    """``linux.memoryPolicy`` of the runtime spec."""

    mode: str
    nodes: tuple[int, ...] = ()
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NetDevice:
    """One entry of ``linux.netDevices`` of the runtime spec."""

    host_name: str
    name: str  # the name in the container; the host name when the spec gives none


def _enum(r: SpecReader, d: Mapping[str, Any], key: str, path: str, allowed: tuple[str, ...]) -> str:
    v = r.str_(d, key, path)
    if v not in allowed:
        raise r.fail(f"{path}.{key}", f"one of {list(allowed)}", v)
    return v


def _flags(r: SpecReader, d: Mapping[str, Any], path: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    flags = r.strs(d, "flags", path)
    for i, f in enumerate(flags):
        if f not in allowed:
            raise r.fail(f"{path}.flags[{i}]", f"one of {list(allowed)}", f)
    return flags


def parse_scheduler(r: SpecReader, d: Any, path: str) -> Scheduler | None:
    if d is None:
        return None
    o = r.obj(d, path)
    return Scheduler(policy=_enum(r, o, "policy", path, SCHED_POLICIES),
                     nice=r.ranged(o, "nice", path, -20, 19) or 0,
                     priority=r.ranged(o, "priority", path, 0, 99) or 0,
                     flags=_flags(r, o, path, SCHED_FLAGS),
                     runtime=r.ranged(o, "runtime", path, 0, U64_MAX) or 0,
                     deadline=r.ranged(o, "deadline", path, 0, U64_MAX) or 0,
                     period=r.ranged(o, "period", path, 0, U64_MAX) or 0)


def parse_io_priority(r: SpecReader, d: Any, path: str) -> IoPriority | None:
    if d is None:
        return None
    o = r.obj(d, path)
    return IoPriority(io_class=_enum(r, o, "class", path, IOPRIO_CLASSES),
                      priority=r.ranged(o, "priority", path, 0, 7) or 0)


def parse_nodes(r: SpecReader, text: str, path: str) -> tuple[int, ...]:
    """``"0-3,7"`` -> (0, 1, 2, 3, 7); each node at most MAX_NUMA_NODE."""
    if not text:
        return ()
    if not _NODES.match(text):
        raise r.fail(path, "a NUMA node list like '0-3,7'", text)
    nodes: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if first > last or last > MAX_NUMA_NODE:
            raise r.fail(path, f"ascending node ranges within 0..{MAX_NUMA_NODE}", text)
        nodes.update(range(first, last + 1))
    return tuple(sorted(nodes))


def parse_memory_policy(r: SpecReader, d: Any, path: str) -> MemoryPolicy | None:
    if d is None:
        return None
    o = r.obj(d, path)
    mode = _enum(r, o, "mode", path, MPOL_MODES)
    nodes = parse_nodes(r, r.str_(o, "nodes", path), f"{path}.nodes")
    if mode in ("MPOL_DEFAULT", "MPOL_LOCAL") and nodes:
        raise r.fail(f"{path}.nodes", f"no nodes with {mode}", r.str_(o, "nodes", path))
    if mode not in ("MPOL_DEFAULT", "MPOL_LOCAL", "MPOL_PREFERRED") and not nodes:
        raise r.fail(f"{path}.nodes", f"at least one node with {mode}", "")
    return MemoryPolicy(mode=mode, nodes=nodes, flags=_flags(r, o, path, MPOL_FLAGS))


def memory_policy_to_json(mp: MemoryPolicy) -> dict[str, Any]:
    """The OCI JSON of ``mp``; ``parse_memory_policy`` of it gives ``mp`` back."""
    return {"mode": mp.mode, "nodes": ",".join(map(str, mp.nodes)), "flags": list(mp.flags)}


def parse_net_devices(r: SpecReader, d: Any, path: str) -> tuple[NetDevice, ...]:
    out = []
    for host, dev in r.obj(d, path).items():
        dp = f"{path}[{host!r}]"
        if not _IFNAME.match(host):
            raise r.fail(dp, "an interface name (1..15 characters, no '/', ':' or space)", host)
        name = r.str_(r.obj(dev, dp), "name", dp) or host
        if not _IFNAME.match(name):
            raise r.fail(f"{dp}.name", "an interface name (1..15 characters, no '/', ':' or space)", name)
        out.append(NetDevice(host_name=host, name=name))
    return tuple(out)


def refuse_unhonoured(r: SpecReader, d: Mapping[str, Any], path: str, refused: Mapping[str, str]) -> None:
    """A SpecError for the first field of ``refused`` that ``d`` sets (to anything but null/empty)."""
    for key, why in refused.items():
        v = d.get(key)
        if v not in (None, {}, [], ""):
            raise r.fail(f"{path}.{key}", f"not set ({why})", v)

