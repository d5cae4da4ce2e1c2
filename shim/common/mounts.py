"""Mount containerd's ``CreateTaskRequest.rootfs`` onto ``<bundle>/rootfs`` and undo it.

containerd (its snapshotter) decides the mounts; the shim only performs them, in the host mount
namespace so containerd's safety-net unmount of ``<bundle>/rootfs`` works. Options are split
the way containerd's ``parseMountOptions`` does (``runwasm.linux.mounts.parse_options``): known
flag words become mount(2) flags, recursive attributes (``rro``...) are applied with
mount_setattr(2), the rest is the data string.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass

from runwasm.linux import syscalls as sc
from runwasm.linux.errors import LinuxError
from runwasm.linux.mounts import parse_options
from runwasm.shim.common.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class MountSpec:
    """One rootfs mount of a Create request (containerd's ``Mount``)."""

    type: str
    source: str
    options: tuple[str, ...] = ()
    target: str = ""  # containerd 2.x Mount.target (a path inside the rootfs); refused when set


def mount_rootfs(mounts: Sequence[MountSpec], target: str) -> list[str]:
    """Mount each entry on ``target`` in order; returns the mount points made (for undo).

    On failure everything mounted so far is undone and InvalidArgumentError is raised.
    """
    made: list[str] = []
    for m in mounts:
        if m.target:
            raise InvalidArgumentError(f"failed to mount rootfs on {target!r}: mount {m.type} {m.source!r} has a "
                                       f"target {m.target!r} inside the rootfs, which is not supported")
    try:
        for m in mounts:
            opts = parse_options(m.options)
            fstype = None if opts.is_bind else m.type
            sc.mount(m.source, target, fstype, opts.flags & ~sc.MS_REMOUNT, opts.data or None)
            made.append(target)
            if opts.is_bind and opts.flags & sc.MS_RDONLY:  # a bind mount ignores ro until remounted
                sc.mount(None, target, None, opts.flags | sc.MS_REMOUNT)
            if opts.recursive:
                sc.mount_setattr(target, opts.attr_set, opts.attr_clr, recursive=True)
            for prop in opts.propagation:
                sc.mount(None, target, None, prop)
    except (OSError, LinuxError) as err:
        unmount_all(made)
        raise InvalidArgumentError(f"failed to mount rootfs on {target!r}: {err}") from err
    return made


def unmount_all(points: Sequence[str]) -> None:
    """Unmount (lazily) each point, last first; already-unmounted points are fine."""
    for p in reversed(points):
        try:
            sc.umount2(p, sc.MNT_DETACH)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.ENOENT):
                raise
