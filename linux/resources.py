"""``linux.resources`` (OCI ``LinuxResources``) parsed into typed values, and mapped to the
cgroup files each hierarchy version writes.

Pure: no I/O. ``v1_writes`` / ``v2_writes`` return ordered ``(controller, file, value)``
triples; the order matters where the kernel checks one file against another (memory.memsw
limit must stay >= memory limit, so when both grow the memory limit goes first, and when both
shrink memsw goes first: we write memory, memsw, and on EINVAL the caller retries in the
other order).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runwasm.linux.errors import InvalidArgumentError
from runwasm.oci.spec_reader import SpecError, check_resources


@dataclass(frozen=True, slots=True)
class DeviceRule:
    """One device cgroup rule of ``linux.resources.devices``."""

    allow: bool
    type: str = "a"          # a, c, b
    major: int | None = None  # None = wildcard
    minor: int | None = None
    access: str = "rwm"

    def v1_line(self) -> str:
        if self.type == "a":
            return "a"
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


@dataclass(frozen=True, slots=True)
class Resources:
    """``linux.resources`` of the runtime spec, parsed."""

    memory_limit: int | None = None
    memory_reservation: int | None = None
    memory_swap: int | None = None
    memory_swappiness: int | None = None
    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    cpu_cpus: str = ""
    cpu_mems: str = ""
    pids_limit: int | None = None
    blkio_weight: int | None = None
    devices: tuple[DeviceRule, ...] = ()


def _int(d: Mapping[str, Any], key: str, path: str) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidArgumentError(f"failed to parse linux.resources: {path}.{key}: expected an integer, got {v!r}")
    return v


def _obj(d: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise InvalidArgumentError(f"failed to parse linux.resources: {path}.{key}: expected an object, got {v!r}")
    return v


def parse_resources(doc: Mapping[str, Any] | None, path: str = "linux.resources") -> Resources:
    """Parse an OCI LinuxResources document; raises InvalidArgumentError naming the field."""
    d = doc or {}
    if not isinstance(d, Mapping):
        raise InvalidArgumentError(f"failed to parse linux.resources: {path}: expected an object, got {d!r}")
    try:
        check_resources(d, path, what="resources" if path == "resources" else "runtime spec")
    except SpecError as err:
        raise InvalidArgumentError(str(err)) from err
    mem = _obj(d, "memory", path)
    cpu = _obj(d, "cpu", path)
    pids = _obj(d, "pids", path)
    blkio = _obj(d, "blockIO", path)
    devices = []
    for i, item in enumerate(d.get("devices") or []):
        dp = f"{path}.devices[{i}]"
        if not isinstance(item, dict):
            raise InvalidArgumentError(f"failed to parse linux.resources: {dp}: expected an object, got {item!r}")
        kind = item.get("type") or "a"
        if kind not in ("a", "b", "c"):
            raise InvalidArgumentError(f"failed to parse linux.resources: {dp}.type: expected a, b or c, got {kind!r}")
        access = item.get("access") or "rwm"
        if not isinstance(access, str) or set(access) - set("rwm"):
            raise InvalidArgumentError(f"failed to parse linux.resources: {dp}.access: expected r/w/m letters, got {access!r}")
        devices.append(DeviceRule(allow=bool(item.get("allow")), type=kind, major=_int(item, "major", dp),
                                  minor=_int(item, "minor", dp), access=access))
    for key in ("cpus", "mems"):
        if not isinstance(cpu.get(key, ""), str):
            raise InvalidArgumentError(f"failed to parse linux.resources: {path}.cpu.{key}: expected a string, got {cpu.get(key)!r}")
    return Resources(
        memory_limit=_int(mem, "limit", f"{path}.memory"),
        memory_reservation=_int(mem, "reservation", f"{path}.memory"),
        memory_swap=_int(mem, "swap", f"{path}.memory"),
        memory_swappiness=_int(mem, "swappiness", f"{path}.memory"),
        cpu_shares=_int(cpu, "shares", f"{path}.cpu"),
        cpu_quota=_int(cpu, "quota", f"{path}.cpu"),
        cpu_period=_int(cpu, "period", f"{path}.cpu"),
        cpu_cpus=cpu.get("cpus") or "",
        cpu_mems=cpu.get("mems") or "",
        pids_limit=_int(pids, "limit", f"{path}.pids"),
        blkio_weight=_int(blkio, "weight", f"{path}.blockIO"),
        devices=tuple(devices),
    )


Write = tuple[str, str, str]  # (controller, file, value)


def v1_writes(r: Resources) -> list[Write]:
    """cgroup v1 files, in write order (controller = the v1 hierarchy name)."""
    out: list[Write] = []
    if r.cpu_cpus:
        out.append(("cpuset", "cpuset.cpus", r.cpu_cpus))
    if r.cpu_mems:
        out.append(("cpuset", "cpuset.mems", r.cpu_mems))
    if r.memory_limit is not None:
        out.append(("memory", "memory.limit_in_bytes", str(r.memory_limit)))
    if r.memory_swap is not None:
        out.append(("memory", "memory.memsw.limit_in_bytes", str(r.memory_swap)))
    if r.memory_reservation is not None:
        out.append(("memory", "memory.soft_limit_in_bytes", str(r.memory_reservation)))
    if r.memory_swappiness is not None and r.memory_swappiness >= 0:
        out.append(("memory", "memory.swappiness", str(r.memory_swappiness)))
    if r.cpu_shares is not None and r.cpu_shares:
        out.append(("cpu", "cpu.shares", str(r.cpu_shares)))
    if r.cpu_period is not None and r.cpu_period:
        out.append(("cpu", "cpu.cfs_period_us", str(r.cpu_period)))
    if r.cpu_quota is not None and r.cpu_quota:
        out.append(("cpu", "cpu.cfs_quota_us", str(r.cpu_quota)))
    if r.pids_limit is not None:
        out.append(("pids", "pids.max", "max" if r.pids_limit <= 0 else str(r.pids_limit)))
    if r.blkio_weight is not None and r.blkio_weight:
        out.append(("blkio", "blkio.weight", str(r.blkio_weight)))
    for rule in r.devices:
        out.append(("devices", "devices.allow" if rule.allow else "devices.deny", rule.v1_line()))
    return out


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) -> cpu.weight (1..10000), the formula runc and crun use."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def v2_writes(r: Resources) -> list[Write]:
    """cgroup v2 files in write order (controller = the v2 controller to enable)."""
    out: list[Write] = []
    if r.cpu_cpus:
        out.append(("cpuset", "cpuset.cpus", r.cpu_cpus))
    if r.cpu_mems:
        out.append(("cpuset", "cpuset.mems", r.cpu_mems))
    if r.memory_limit is not None:
        out.append(("memory", "memory.max", "max" if r.memory_limit < 0 else str(r.memory_limit)))
    if r.memory_swap is not None:
        # OCI swap is memory+swap; v2 memory.swap.max is swap alone
        if r.memory_swap < 0:
            out.append(("memory", "memory.swap.max", "max"))
        elif r.memory_limit is not None and r.memory_limit >= 0:
            out.append(("memory", "memory.swap.max", str(max(0, r.memory_swap - r.memory_limit))))
    if r.memory_reservation is not None:
        out.append(("memory", "memory.low", str(r.memory_reservation)))
    if r.cpu_shares:
        out.append(("cpu", "cpu.weight", str(shares_to_weight(r.cpu_shares))))
    if r.cpu_quota is not None and r.cpu_quota != 0 or r.cpu_period:
        quota = "max" if r.cpu_quota is None or r.cpu_quota < 0 else str(r.cpu_quota)
        out.append(("cpu", "cpu.max", f"{quota} {r.cpu_period or 100000}"))
    if r.pids_limit is not None:
        out.append(("pids", "pids.max", "max" if r.pids_limit <= 0 else str(r.pids_limit)))
    if r.blkio_weight:
        out.append(("io", "io.weight", str(1 + (r.blkio_weight - 10) * 9999 // 990)))
    return out
