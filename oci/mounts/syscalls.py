"""Thin ctypes wrappers: fsopen/fsconfig/fsmount/move_mount, mount(2), umount2, loop devices.

Rules (containerd ``internal/fsmount`` and ``plugins/mount/erofs``):

* one ``fsconfig`` call per option, so the 4 KiB ``mount(2)`` option limit never applies
  (each value is still capped at 255 bytes by the kernel, hence short store paths);
* ``ENOSYS`` from ``fsopen`` (kernel < 5.2) -> ``mount(2)`` with a joined option string;
* ``ENOTBLK`` from an EROFS mount of a regular file (no file-backed mounts) -> attach a
  read-only, autoclear loop device (``LOOP_CTL_GET_FREE`` + ``LOOP_CONFIGURE``) and retry.
  The loop device goes away by itself after the unmount.

Errors are ``OSError`` with errno kept and the kernel's fs-context messages appended.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS_MOVE_MOUNT, SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT = 429, 430, 431, 432
FSOPEN_CLOEXEC = FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE = 0, 1, 6
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
MNT_DETACH = 2
LOOP_CTL_GET_FREE, LOOP_CONFIGURE = 0x4C82, 0x4C0A
LO_FLAGS_READ_ONLY, LO_FLAGS_AUTOCLEAR = 1, 4

_force_loop = False  # set after the first ENOTBLK, for the life of the process (as containerd)


@dataclass(frozen=True, slots=True)
class MountResult:
    """How a mount was made: ``method`` is ``fsmount``, ``mount2`` or ``loop``."""

    target: str
    method: str
    loop_device: str = ""


def _err(what: str, extra: str = "") -> OSError:
    e = ctypes.get_errno()
    msg = f"{what}: {os.strerror(e)}" + (f" ({extra})" if extra else "")
    return OSError(e, msg)


def _fs_messages(fd: int) -> str:
    msgs = []
    while True:
        try:
            data = os.read(fd, 1024)
        except OSError:
            break
        if not data:
            break
        msgs.append(data.decode(errors="replace").strip())
    return "; ".join(msgs)


def _new_api_mount(fstype: str, source: str | None, target: str, options: Sequence[tuple[str, str | None]],
                   attrs: int) -> None:
    fsfd = _libc.syscall(SYS_FSOPEN, fstype.encode(), FSOPEN_CLOEXEC)
    if fsfd < 0:
        raise _err(f"fsopen {fstype}")
    try:
        if attrs & MOUNT_ATTR_RDONLY and _libc.syscall(SYS_FSCONFIG, fsfd, FSCONFIG_SET_FLAG, b"ro", None, 0) < 0:
            raise _err(f"fsconfig {fstype} ro", _fs_messages(fsfd))
        if source is not None and _libc.syscall(SYS_FSCONFIG, fsfd, FSCONFIG_SET_STRING, b"source",
                                                source.encode(), 0) < 0:
            raise _err(f"fsconfig {fstype} source={source}", _fs_messages(fsfd))
        for key, value in options:
            if value is None:
                rc = _libc.syscall(SYS_FSCONFIG, fsfd, FSCONFIG_SET_FLAG, key.encode(), None, 0)
            else:
                rc = _libc.syscall(SYS_FSCONFIG, fsfd, FSCONFIG_SET_STRING, key.encode(), value.encode(), 0)
            if rc < 0:
                raise _err(f"fsconfig {fstype} {key}={value}", _fs_messages(fsfd))
        if _libc.syscall(SYS_FSCONFIG, fsfd, FSCONFIG_CMD_CREATE, None, None, 0) < 0:
            raise _err(f"fsconfig {fstype} create", _fs_messages(fsfd))
        mfd = _libc.syscall(SYS_FSMOUNT, fsfd, FSMOUNT_CLOEXEC, attrs)
        if mfd < 0:
            raise _err(f"fsmount {fstype}", _fs_messages(fsfd))
        try:
            if _libc.syscall(SYS_MOVE_MOUNT, mfd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH) < 0:
                raise _err(f"move_mount {fstype} to {target}")
        finally:
            os.close(mfd)
    finally:
        os.close(fsfd)


def _legacy_mount(fstype: str, source: str, target: str, options: Sequence[tuple[str, str | None]],
                  flags: int) -> None:
    data = ",".join(k if v is None else f"{k}={v}" for k, v in options)
    if len(data) >= 4096:
        raise OSError(errno.E2BIG, f"mount {fstype}: option string of {len(data)} bytes exceeds one page")
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode() or None) != 0:
        raise _err(f"mount {fstype} {source} on {target}")


def mount_fs(fstype: str, source: str, target: str, options: Sequence[tuple[str, str | None]] = (), *,
             readonly: bool = False, nosuid: bool = False, nodev: bool = False) -> str:
    """Mount with the new API, or ``mount(2)`` if ``fsopen`` is ENOSYS. Returns the method used."""
    attrs = (MOUNT_ATTR_RDONLY if readonly else 0) | (MOUNT_ATTR_NOSUID if nosuid else 0) | (
        MOUNT_ATTR_NODEV if nodev else 0)
    try:
        _new_api_mount(fstype, source, target, options, attrs)
        return "fsmount"
    except OSError as err:
        if err.errno != errno.ENOSYS:
            raise
    flags = (MS_RDONLY if readonly else 0) | (MS_NOSUID if nosuid else 0) | (MS_NODEV if nodev else 0)
    _legacy_mount(fstype, source, target, options, flags)
    return "mount2"


@contextlib.contextmanager
def loop_device(path: Path) -> Iterator[str]:
    """Attach ``path`` to a free loop device, read-only and autoclear, and yield ``/dev/loopN``.

    The device stays open until the block ends: an autoclear loop device is detached on its last
    close, so whatever uses it (a mount) must be made inside the block; after it, the mount alone
    keeps the device, and unmounting frees it."""
    lfd, dev = _attach(path)
    try:
        yield dev
    finally:
        os.close(lfd)


def _attach(path: Path) -> tuple[int, str]:
    """Configure a free loop device over ``path``; returns (open fd of the device, its path)."""
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    backing = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        info = bytearray(232)
        struct.pack_into("<I", info, 52, LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR)
        name = os.fsencode(path)[:63]
        info[56:56 + len(name)] = name
        config = struct.pack("<II", backing, 0) + bytes(info) + bytes(64)
        for _ in range(8):
            dev = f"/dev/loop{fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)}"
            lfd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.ioctl(lfd, LOOP_CONFIGURE, config)
            except OSError as err:
                os.close(lfd)
                if err.errno == errno.EBUSY:  # raced with another attach
                    continue
                raise
            return lfd, dev
        raise OSError(errno.EBUSY, "no free loop device after 8 attempts")
    finally:
        os.close(backing)
        os.close(ctl)


def mount_erofs_file(image: Path, target: Path, devices: Sequence[Path] = ()) -> MountResult:
    """Mount an EROFS image file read-only: file-backed first, loop device after ENOTBLK."""
    global _force_loop
    opts: list[tuple[str, str | None]] = [("device", str(d)) for d in devices]
    if not _force_loop:
        try:
            method = mount_fs("erofs", str(image), str(target), opts, readonly=True, nodev=False)
            return MountResult(str(target), method)
        except OSError as err:
            if err.errno != errno.ENOTBLK:
                raise
            _force_loop = True
    with contextlib.ExitStack() as held:
        dev = held.enter_context(loop_device(image))
        loop_opts: list[tuple[str, str | None]] = [("device", held.enter_context(loop_device(d))) for d in devices]
        method = mount_fs("erofs", dev, str(target), loop_opts, readonly=True)
    return MountResult(str(target), f"loop+{method}", dev)


def mount_overlay(lowers: Sequence[Path], target: Path, upper: Path | None = None, work: Path | None = None,
                  extra: Sequence[tuple[str, str | None]] = ()) -> str:
    """Mount overlayfs; ``lowers`` top-most first. One ``lowerdir+`` per layer when the kernel
    accepts it, else a legacy ``lowerdir=a:b`` string (which must stay under one page)."""
    tail: list[tuple[str, str | None]] = []
    if upper is not None and work is not None:
        tail = [("upperdir", str(upper)), ("workdir", str(work))]
    tail += list(extra)
    readonly = upper is None
    try:
        _new_api_mount("overlay", "overlay", str(target),
                       [("lowerdir+", str(x)) for x in lowers] + tail,
                       MOUNT_ATTR_RDONLY if readonly else 0)
        return "fsmount"
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
    for p in lowers:
        if ":" in str(p) or "," in str(p):
            raise OSError(errno.EINVAL, f"overlay lower {str(p)!r} contains ':' or ','")
    opts = [("lowerdir", ":".join(map(str, lowers)))] + tail
    _legacy_mount("overlay", "overlay", str(target), opts, MS_RDONLY if readonly else 0)
    return "mount2"


def bind_mount(source: Path, target: Path, readonly: bool = False) -> None:
    MS_BIND, MS_REMOUNT = 4096, 32
    if _libc.mount(str(source).encode(), str(target).encode(), None, MS_BIND, None) != 0:
        raise _err(f"bind mount {source} on {target}")
    if readonly and _libc.mount(None, str(target).encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY, None) != 0:
        raise _err(f"remount {target} read-only")


def umount(target: Path | str, detach: bool = False) -> None:
    """umount2; EINVAL/ENOENT (not mounted, gone) are raised as OSError for the caller to judge."""
    if _libc.umount2(str(target).encode(), MNT_DETACH if detach else 0) != 0:
        raise _err(f"umount {target}")


def is_mountpoint(path: Path | str) -> bool:
    want = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == want for line in fh)
