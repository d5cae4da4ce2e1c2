"""Mount containerd's ``CreateTaskRequest.rootfs`` onto ``<bundle>/rootfs`` and undo it.

containerd (its snapshotter) decides the mounts; the shim only performs them, in the host mount
namespace so containerd's safety-net unmount of ``<bundle>/rootfs`` works. Options are split
the way containerd's ``parseMountOptions`` does: known flag words become mount(2) flags, the
rest is the data string.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass

from runwasm.shim.errors import InvalidArgumentError

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_SYNCHRONOUS, MS_REMOUNT, MS_MANDLOCK, MS_DIRSYNC = 0x10, 0x20, 0x40, 0x80
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 0x400, 0x800, 0x1000, 0x4000
MS_PRIVATE, MS_SLAVE, MS_SHARED, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 19, 1 << 20, 1 << 21, 1 << 24
MNT_DETACH = 2

# word -> (clear?, flag)
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS), "atime": (True, MS_NOATIME), "bind": (False, MS_BIND),
    "defaults": (False, 0), "dev": (True, MS_NODEV), "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC), "exec": (True, MS_NOEXEC), "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME), "nodev": (False, MS_NODEV), "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC), "nomand": (True, MS_MANDLOCK), "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME), "nosuid": (False, MS_NOSUID), "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME), "remount": (False, MS_REMOUNT), "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY), "strictatime": (False, MS_STRICTATIME), "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}
_PROPAGATION = {"private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC, "slave": MS_SLAVE,
                "rslave": MS_SLAVE | MS_REC, "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC}


@dataclass(frozen=True, slots=True)
class MountSpec:
    type: str
    source: str
    options: tuple[str, ...] = ()


def parse_options(options: Sequence[str]) -> tuple[int, int, str]:
    """Split options into (flags, propagation flags, data string)."""
    flags = prop = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            clear, bit = _FLAGS[opt]
            flags = flags & ~bit if clear else flags | bit
        elif opt in _PROPAGATION:
            prop |= _PROPAGATION[opt]
        else:
            data.append(opt)
    return flags, prop, ",".join(data)


_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode() or None, ctypes.c_ulong(flags),
                   data.encode() or None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'bind'} {source!r} on {target!r}: {os.strerror(err)}")


def mount_rootfs(mounts: Sequence[MountSpec], target: str) -> list[str]:
    """Mount each entry on ``target`` in order; returns the mount points made (for undo).

    On failure everything mounted so far is undone and InvalidArgumentError is raised.
    """
    made: list[str] = []
    try:
        for m in mounts:
            flags, prop, data = parse_options(m.options)
            fstype = "" if flags & MS_BIND else m.type
            _mount(m.source, target, fstype, flags & ~MS_REMOUNT, data)
            made.append(target)
            if flags & MS_BIND and flags & MS_RDONLY:  # a bind mount ignores ro until remounted
                _mount("", target, "", flags | MS_REMOUNT, "")
            if prop:
                _mount("", target, "", prop, "")
    except OSError as err:
        unmount_all(made)
        raise InvalidArgumentError(f"failed to mount rootfs: {err.strerror}") from err
    return made


def unmount_all(points: Sequence[str]) -> None:
    """Unmount (lazily) each point, last first; already-unmounted points are fine."""
    for p in reversed(points):
        if _libc.umount2(p.encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):
                raise OSError(err, f"umount {p!r}: {os.strerror(err)}")
