"""The container's root: propagation, the rootfs bind, pivot_root (or chroot), ``root.readonly``.

Order (driven by ``init.py``):
1. ``make_private`` first in the new mount namespace, so nothing we mount propagates back to
   the host (and so pivot_root, which refuses shared mounts, works);
2. ``bind_rootfs`` makes the rootfs a mount point of its own (pivot_root needs one);
3. spec mounts and /dev go into it (mounts.py, devices.py);
4. ``pivot`` switches root and detaches the old one; then ``set_root_propagation`` applies a
   shared/slave/unbindable ``rootfsPropagation`` to the new ``/`` (pivot_root refuses a shared
   new root, so not before);
5. ``make_readonly`` last among mount changes to ``/``, because earlier steps create
   mountpoints and device nodes inside it.
"""

from __future__ import annotations

import os

from runwasm.linux import syscalls as sc
from runwasm.linux.errors import InvalidArgumentError, SetupError
from runwasm.linux.mounts import PROPAGATION


def _fail(step: str, path: str, err: OSError) -> SetupError:
    return SetupError(f"failed to {step} {path!r}: [errno {err.errno}] {os.strerror(err.errno or 0)}")


def make_private(rootfs_propagation: str) -> None:
    """Make every mount in the new namespace private (or rslave/rshared per ``rootfsPropagation``).

    ``/`` is first made rshared/rslave/rprivate recursively, as runc does (its own value for a
    shared rootfsPropagation, which is also applied to the container's ``/`` after the pivot:
    ``set_root_propagation``)."""
    if rootfs_propagation in ("shared", "rshared"):
        # as runc: the namespace's copies stay peers of the host's mounts, so a bind mount with
        # shared propagation (a Bidirectional volume) joins the host's peer group
        flag = PROPAGATION[rootfs_propagation]
    elif rootfs_propagation in ("slave", "rslave"):
        flag = sc.MS_SLAVE | sc.MS_REC
    else:
        flag = sc.MS_PRIVATE | sc.MS_REC
    if rootfs_propagation and rootfs_propagation not in PROPAGATION:
        raise InvalidArgumentError(f"failed to apply linux.rootfsPropagation: unknown value {rootfs_propagation!r}")
    try:
        sc.mount(None, "/", None, flag, None)
    except OSError as err:
        raise _fail("set mount propagation of", "/", err) from err


def parent_mount_private(rootfs: str) -> None:
    """Make the mount holding ``rootfs`` private if it is shared (as runc does): pivot_root
    refuses a shared parent, and the rootfs bind must not propagate to the host."""
    best, shared = "", False
    target = os.path.realpath(rootfs)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].replace("\\040", " ")
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best = point
                shared = any(o.startswith("shared:") for o in fields[6:fields.index("-")])
    if best and shared:
        try:
            sc.mount(None, best, None, sc.MS_PRIVATE, None)
        except OSError as err:
            raise _fail("make private the parent mount of", rootfs, err) from err


def bind_rootfs(rootfs: str) -> None:
    try:
        sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC, None)
    except OSError as err:
        raise _fail("bind-mount rootfs", rootfs, err) from err


def set_root_propagation(rootfs: str, rootfs_propagation: str) -> None:
    """Apply a shared/slave/unbindable ``rootfsPropagation`` to ``rootfs`` (``/`` after pivot)."""
    if rootfs_propagation in ("shared", "rshared", "slave", "rslave", "unbindable", "runbindable"):
        try:
            sc.mount(None, rootfs, None, PROPAGATION[rootfs_propagation], None)
        except OSError as err:
            raise _fail(f"set rootfs propagation {rootfs_propagation} on", rootfs, err) from err


def pivot(rootfs: str, has_mount_ns: bool) -> None:
    """Switch root to ``rootfs``: pivot_root(".", ".") then detach the old root (runc's trick,
    no put_old directory needed); plain chroot when the spec has no mount namespace."""
    try:
        os.chdir(rootfs)
        if not has_mount_ns:
            os.chroot(".")
            os.chdir("/")
            return
        oldroot = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            sc.pivot_root(".", ".")
            os.fchdir(oldroot)
            # the old root may be shared with the host: make it slave before detaching so the
            # unmount does not propagate out
            sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC, None)
            sc.umount2(".", sc.MNT_DETACH)
        finally:
            os.close(oldroot)
        os.chdir("/")
    except OSError as err:
        raise _fail("pivot_root into", rootfs, err) from err


def make_readonly() -> None:
    """Remount ``/`` read-only, keeping its nosuid/nodev/noexec (a bind remount must repeat them)."""
    st = os.statvfs("/")
    flags = sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY
    for bit, flag in ((os.ST_NOSUID, sc.MS_NOSUID), (os.ST_NODEV, sc.MS_NODEV), (os.ST_NOEXEC, sc.MS_NOEXEC)):
        if st.f_flag & bit:
            flags |= flag
    try:
        sc.mount(None, "/", None, flags, None)
    except OSError as err:
        raise _fail("remount read-only", "/", err) from err
