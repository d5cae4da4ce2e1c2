"""Reading decoded runtime-spec JSON: ``SpecError``, a typed field reader, and the numeric ranges.

Every integer field runwasm reads from a spec is range-checked here, at parse time, with runc's
Go types as the reference (uid_t ids, int64/uint64 limits): an out-of-range value is a
``SpecError`` (InvalidArgument) naming the JSON path, the value and the allowed range, instead
of an OverflowError or a silently different meaning (uid -1 is not root) later on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SpecError(ValueError):
    """config.json is malformed: the message names the source and the JSON path."""

    status = "invalid_argument"


# --- numeric ranges (runc's Go types: uint32 ids, int64/uint64 limits) -------------------------

U16_MAX = 2**16 - 1
U32_MAX = 2**32 - 1
ID_MAX = 2**32 - 2
"""uid/gid upper bound: (uid_t)-1 = 2**32-1 means "no change" to setresuid, so it is not an id."""
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
U64_MAX = 2**64 - 1
OOM_SCORE_ADJ = (-1000, 1000)
UMASK_MAX = 0o777
SIGNAL_MAX = 64
"""SIGRTMAX on Linux: the highest signal number Kill accepts."""

RLIMIT_TYPES = frozenset({
    "RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_RSS",
    "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK",
})
"""The rlimit names the OCI runtime spec defines for Linux (getrlimit(2))."""


def check_range(value: int, lo: int, hi: int, path: str, source: str = "", *, note: str = "",
                what: str = "runtime spec") -> int:
    """``value`` if ``lo <= value <= hi``, else a SpecError naming path, value and range."""
    if not lo <= value <= hi:
        where = f"invalid {what} {source}: " if source else f"invalid {what}: "
        extra = f" ({note})" if note else ""
        raise SpecError(f"{where}{path}: expected an integer in {lo}..{hi}{extra}, got {value}")
    return value


# LinuxResources integer fields: (lo, hi, note). -1 means "unlimited" where runc reads it so.
_LIMIT = (-1, I64_MAX, "-1 = unlimited")
_U64 = (0, U64_MAX, "")
_WEIGHT = (0, 1000, "10..1000, 0 = unset")
_RESOURCE_INTS: dict[str, dict[str, tuple[int, int, str]]] = {
    "memory": {"limit": _LIMIT, "reservation": _LIMIT, "swap": _LIMIT, "kernel": _LIMIT, "kernelTCP": _LIMIT,
               "swappiness": (0, 100, "")},
    "cpu": {"shares": _U64, "quota": _LIMIT, "burst": _U64, "period": _U64, "realtimeRuntime": _LIMIT,
            "realtimePeriod": _U64, "idle": (I64_MIN, I64_MAX, "")},
    "pids": {"limit": (I64_MIN, I64_MAX, "<= 0 = unlimited")},
    "blockIO": {"weight": _WEIGHT, "leafWeight": _WEIGHT},
    "network": {"classID": (0, U32_MAX, "")},
}
_RESOURCE_LISTS: dict[tuple[str, str], dict[str, tuple[int, int, str]]] = {
    ("", "devices"): {"major": (-1, U32_MAX, "-1 = any"), "minor": (-1, U32_MAX, "-1 = any")},
    ("", "hugepageLimits"): {"limit": _U64},
    ("blockIO", "weightDevice"): {"major": (0, U32_MAX, ""), "minor": (0, U32_MAX, ""), "weight": _WEIGHT,
                                  "leafWeight": _WEIGHT},
    **{("blockIO", k): {"major": (0, U32_MAX, ""), "minor": (0, U32_MAX, ""), "rate": _U64}
       for k in ("throttleReadBpsDevice", "throttleWriteBpsDevice", "throttleReadIOPSDevice",
                 "throttleWriteIOPSDevice")},
    ("network", "priorities"): {"priority": (0, U32_MAX, "")},
}


def check_resources(doc: Mapping[str, Any], path: str = "linux.resources", source: str = "",
                    what: str = "runtime spec") -> None:
    """Check the type and range of every integer field of an OCI LinuxResources document;
    raises SpecError naming the JSON path, the value and the allowed range."""
    r = SpecReader(source, what)

    def ints(obj: Mapping[str, Any], at: str, fields: Mapping[str, tuple[int, int, str]]) -> None:
        for key, (lo, hi, note) in fields.items():
            r.ranged(obj, key, at, lo, hi, note)

    # an absent section has nothing to check: skipped without building its paths (a task's
    # Create checks its resources twice, and most sections are absent)
    for section, fields in _RESOURCE_INTS.items():
        if doc.get(section) is not None:
            ints(r.obj(doc.get(section), f"{path}.{section}"), f"{path}.{section}", fields)
    blkio = r.obj(doc.get("blockIO"), f"{path}.blockIO")
    for key in ("weight", "leafWeight"):
        if blkio.get(key) and blkio[key] < 10:  # type and upper bound checked above
            raise r.fail(f"{path}.blockIO.{key}", "an integer in 10..1000 (0 = unset)", blkio[key])
    for (section, key), fields in _RESOURCE_LISTS.items():
        if section and doc.get(section) is None:
            continue
        at = f"{path}.{section}" if section else path
        parent = r.obj(doc.get(section), at) if section else doc
        for i, item in enumerate(r.list_(parent, key, at)):
            ints(r.obj(item, f"{at}.{key}[{i}]"), f"{at}.{key}[{i}]", fields)
    for name, item in r.obj(doc.get("rdma"), f"{path}.rdma").items():
        ints(r.obj(item, f"{path}.rdma[{name!r}]"), f"{path}.rdma[{name!r}]",
             {"hcaHandles": (0, U32_MAX, ""), "hcaObjects": (0, U32_MAX, "")})


# --- small typed readers ------------------------------------------------------------------------


class SpecReader:
    def __init__(self, source: str, what: str = "runtime spec") -> None:
        self.source = source
        self.what = what

    def fail(self, path: str, expected: str, got: object) -> SpecError:
        shown = repr(got)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        where = f"{self.what} {self.source}" if self.source else self.what
        return SpecError(f"invalid {where}: {path}: expected {expected}, got {shown}")

    def obj(self, d: Any, path: str) -> Mapping[str, Any]:
        if d is None:
            return {}
        if not isinstance(d, dict):
            raise self.fail(path, "an object", d)
        return d

    def str_(self, d: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
        v = d.get(key, default)
        if v is None:
            return default
        if not isinstance(v, str):
            raise self.fail(f"{path}.{key}" if path else key, "a string", v)
        return v

    def bool_(self, d: Mapping[str, Any], key: str, path: str) -> bool:
        v = d.get(key, False)
        if v is None:
            return False
        if not isinstance(v, bool):
            raise self.fail(f"{path}.{key}", "a boolean", v)
        return v

    def int_(self, d: Mapping[str, Any], key: str, path: str, default: int | None = None) -> int | None:
        v = d.get(key, default)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(f"{path}.{key}", "an integer", v)
        return v

    def ranged(self, d: Mapping[str, Any], key: str, path: str, lo: int, hi: int, note: str = "") -> int | None:
        """An optional integer in ``lo..hi``; out of range is a SpecError naming path and range."""
        v = self.int_(d, key, path)
        if v is None:
            return None
        return check_range(v, lo, hi, f"{path}.{key}", self.source, note=note, what=self.what)

    def strs(self, d: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        v = d.get(key)
        if v is None:
            return ()
        if not isinstance(v, list):
            raise self.fail(f"{path}.{key}", "an array of strings", v)
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise self.fail(f"{path}.{key}[{i}]", "a string", item)
        return tuple(v)

    def list_(self, d: Mapping[str, Any], key: str, path: str) -> list[Any]:
        v = d.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise self.fail(f"{path}.{key}", "an array", v)
        return v



def check_seccomp(r: SpecReader, doc: Mapping[str, Any], path: str) -> None:
    """Integer fields of ``linux.seccomp`` (names and actions are checked when compiling it)."""
    r.ranged(doc, "defaultErrnoRet", path, 0, U32_MAX)
    for i, rule in enumerate(r.list_(doc, "syscalls", path)):
        rp = f"{path}.syscalls[{i}]"
        o = r.obj(rule, rp)
        r.ranged(o, "errnoRet", rp, 0, U32_MAX)
        for j, arg in enumerate(r.list_(o, "args", rp)):
            ap = f"{rp}.args[{j}]"
            a = r.obj(arg, ap)
            r.ranged(a, "index", ap, 0, 5, "syscall argument 0..5")
            r.ranged(a, "value", ap, 0, U64_MAX)
            r.ranged(a, "valueTwo", ap, 0, U64_MAX)
