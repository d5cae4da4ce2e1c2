"""runc's options types, accepted so that ``ctr run --uidmap/--gidmap`` (and CRI configs written
for runc) work with runwasm: each field is honoured, refused, or logged as meaningless.

``ctr`` sends ``containerd.linux.runc.CreateOptions`` (containerd 1.6, for any non-runc runtime)
or ``containerd.runc.v1.Options`` (2.x) with ``IoUid``/``IoGid`` = the host ids of container
root. Field numbers are containerd's (``api/types/runc/options/oci.proto``,
``runtime/linux/runctypes/runc.proto``). Policy per field:

- honoured: ``IoUid``/``IoGid``: the stdio FIFOs of the container's processes are given that
  owner, so a user-namespaced process can reopen ``/dev/stdout`` (runc's shim gives it pipes
  owned by them); ``NoNewKeyring=true`` (runwasm never makes a per-container session keyring);
- refused when set (InvalidArgumentError naming the field and value): ``NoPivotRoot``,
  ``ShimCgroup``, ``SystemdCgroup``, ``BinaryName``/``Runtime``, ``TaskApiAddress``/``Version``
  and the CRIU restore fields of CreateOptions;
- logged as ignored when set: ``Root``/``RuntimeRoot`` (runc's state dir: runwasm keeps state in
  the bundle), CRIU paths (checkpoint is not supported, Checkpoint RPCs fail), and
  ``NoNewKeyring=false`` (runwasm does not make a session keyring: containers keep the shim's).
Unknown field numbers are refused.
"""

from __future__ import annotations

import logging

from runwasm.shim.common import wire
from runwasm.shim.common.errors import InvalidArgumentError

log = logging.getLogger(__name__)

RUNC_V1 = "containerd.runc.v1.Options"
LINUX_CREATE = "containerd.linux.runc.CreateOptions"
LINUX_RUNC = "containerd.linux.runc.RuncOptions"

_RESTORE = "is a CRIU restore option; runwasm does not restore checkpoints"
# field number -> (name, kind, policy, reason); kind: b(ool) s(tring) u(int32) r(epeated string)
_Table = dict[int, tuple[str, str, str, str]]
_KEYRING = ("NoNewKeyring", "b", "keyring", "")
_TABLES: dict[str, _Table] = {
    RUNC_V1: {
        1: ("NoPivotRoot", "b", "refuse", "runwasm always uses pivot_root"),
        2: _KEYRING,
        3: ("ShimCgroup", "s", "refuse", "runwasm does not move its server into a cgroup"),
        4: ("IoUid", "u", "uid", ""), 5: ("IoGid", "u", "gid", ""),
        6: ("BinaryName", "s", "refuse", "runwasm runs containers itself, there is no runc binary to choose"),
        7: ("Root", "s", "ignore", "runc's state root; runwasm keeps its state in the bundle"),
        9: ("SystemdCgroup", "b", "refuse", "runwasm manages cgroupfs paths, not systemd units"),
        10: ("CriuImagePath", "s", "ignore", "checkpoint/restore is not supported"),
        11: ("CriuWorkPath", "s", "ignore", "checkpoint/restore is not supported"),
        12: ("TaskApiAddress", "s", "refuse", "runwasm serves the task API itself"),
        13: ("TaskApiVersion", "u", "refuse", "runwasm serves the task API itself"),
    },
    LINUX_CREATE: {
        1: ("NoPivotRoot", "b", "refuse", "runwasm always uses pivot_root"),
        2: ("OpenTcp", "b", "refuse", _RESTORE), 3: ("ExternalUnixSockets", "b", "refuse", _RESTORE),
        4: ("Terminal", "b", "refuse", _RESTORE), 5: ("FileLocks", "b", "refuse", _RESTORE),
        6: ("EmptyNamespaces", "r", "refuse", _RESTORE), 7: ("CgroupsMode", "s", "refuse", _RESTORE),
        8: _KEYRING,
        9: ("ShimCgroup", "s", "refuse", "runwasm does not move its server into a cgroup"),
        10: ("IoUid", "u", "uid", ""), 11: ("IoGid", "u", "gid", ""),
        12: ("CriuWorkPath", "s", "ignore", "checkpoint/restore is not supported"),
        13: ("CriuImagePath", "s", "ignore", "checkpoint/restore is not supported"),
    },
    LINUX_RUNC: {
        1: ("Runtime", "s", "refuse", "runwasm runs containers itself, there is no runc binary to choose"),
        2: ("RuntimeRoot", "s", "ignore", "runc's state root; runwasm keeps its state in the bundle"),
        3: ("CriuPath", "s", "ignore", "checkpoint/restore is not supported"),
        4: ("SystemdCgroup", "b", "refuse", "runwasm manages cgroupfs paths, not systemd units"),
    },
}
TYPES = tuple(_TABLES)


def _value(kind: str, num: int, wt: int, raw: int | bytes) -> str | int:
    if kind == "s" or kind == "r":
        return wire.expect_str(num, wt, raw)
    v: int = wire.expect_int(num, wt, raw)
    if kind == "u" and v >= 1 << 32:
        raise wire.WireError(f"field {num}: {v} does not fit a uint32")
    return bool(v) if kind == "b" else v


def parse(type_name: str, value: bytes, source: str) -> dict[str, int]:
    """Check a runc options message; return what runwasm honours as RuntimeOptions field values
    (``io_uid``/``io_gid`` when non-zero)."""
    table = _TABLES[type_name]
    out: dict[str, int] = {}
    notes: list[str] = []
    new_keyring = True
    try:
        for num, wt, raw in wire.fields(value):
            if num not in table:
                raise InvalidArgumentError(f"invalid {source}: {type_name} field {num} is unknown to runwasm")
            name, kind, policy, reason = table[num]
            v = _value(kind, num, wt, raw)
            if not v:
                continue  # proto3: a zero value is the field's default
            if policy == "refuse":
                raise InvalidArgumentError(f"unsupported {source}: {type_name} {name}={v!r}: {reason}")
            if policy == "ignore":
                notes.append(f"{name}={v!r} ignored ({reason})")
            elif policy == "keyring":
                new_keyring = False
            elif policy in ("uid", "gid"):
                out[f"io_{policy}"] = int(v)
    except wire.WireError as err:
        raise InvalidArgumentError(f"invalid {source}: {type_name} does not decode: {err}") from err
    if new_keyring:
        notes.append("NoNewKeyring=false: runwasm does not create a session keyring per container")
    log.info("%s %s: honoured %s; %s", source, type_name,
             ", ".join(f"{k}={v}" for k, v in out.items()) or "nothing", "; ".join(notes))
    return out
