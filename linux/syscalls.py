"""The ctypes layer: the Linux syscalls Python 3.11's ``os`` lacks.

Every wrapper raises ``OSError`` with the real errno (``ctypes.get_errno``) and the path or
argument in ``filename`` when there is one, so step modules can wrap it in a ``SetupError``.
Constants are the x86_64/aarch64 generic values from the kernel uapi headers.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import termios


def _open_libc() -> ctypes.CDLL:
    """glibc by its soname; ``find_library`` (which runs ``ldconfig -p``: a fork and exec at
    import time, on the first container's path) only when that fails."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c") or "libc.so.6", use_errno=True)


_libc = _open_libc()

# clone/unshare/setns flags (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

NAMESPACE_FLAGS: dict[str, int] = {
    "mount": CLONE_NEWNS, "cgroup": CLONE_NEWCGROUP, "uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER, "pid": CLONE_NEWPID, "network": CLONE_NEWNET, "time": CLONE_NEWTIME,
}
# the file name under /proc/<pid>/ns/ for each spec namespace type
NAMESPACE_FILES: dict[str, str] = {
    "mount": "mnt", "cgroup": "cgroup", "uts": "uts", "ipc": "ipc", "user": "user", "pid": "pid",
    "network": "net", "time": "time",
}

# mount(2) flags (linux/mount.h)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_POSIXACL = 1 << 16
MS_STRICTATIME = 1 << 24
MS_I_VERSION = 1 << 23
MS_LAZYTIME = 1 << 25

MNT_DETACH = 2

# mount_setattr(2) (linux/mount.h, kernel >= 5.12)
MOUNT_ATTR_RDONLY = 0x00000001
MOUNT_ATTR_NOSUID = 0x00000002
MOUNT_ATTR_NODEV = 0x00000004
MOUNT_ATTR_NOEXEC = 0x00000008
MOUNT_ATTR__ATIME = 0x00000070
MOUNT_ATTR_RELATIME = 0x00000000
MOUNT_ATTR_NOATIME = 0x00000010
MOUNT_ATTR_STRICTATIME = 0x00000020
MOUNT_ATTR_NODIRATIME = 0x00000080
MOUNT_ATTR_NOSYMFOLLOW = 0x00200000
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_RECURSIVE = 0x8000
_NR_MOUNT_SETATTR = 442  # same number on x86_64 and aarch64 (asm-generic)
_NR_OPEN_TREE = 428  # same on x86_64 and aarch64
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _check(res: int, what: str, filename: str | None = None) -> int:
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", filename)
    return res


def _b(s: str | None) -> bytes | None:
    return s.encode() if s is not None else None


_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2); raises OSError naming ``target``."""
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), "mount", target)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str, attr_set: int, attr_clr: int, *, recursive: bool = True) -> None:
    """mount_setattr(2) on the mount at ``path`` (symlinks not followed), with ``AT_RECURSIVE``
    by default so every submount changes too; raises OSError naming ``path`` (ENOSYS before
    Linux 5.12)."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    flags = AT_SYMLINK_NOFOLLOW | (AT_RECURSIVE if recursive else 0)
    res = _libc.syscall(ctypes.c_long(_NR_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), _b(path),
                        ctypes.c_uint(flags), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    _check(int(res), "mount_setattr", path)


def open_tree(dfd: int, flags: int, path: str = "") -> int:
    """open_tree(2) (kernel >= 5.2) of ``path`` relative to ``dfd`` (``""`` with AT_EMPTY_PATH:
    ``dfd`` itself); returns the new fd; raises OSError."""
    res = _libc.syscall(ctypes.c_long(_NR_OPEN_TREE), ctypes.c_int(dfd), _b(path), ctypes.c_uint(flags))
    return _check(int(res), "open_tree", path or f"fd {dfd}")


def mount_setattr_fd(fd: int, attr_set: int, attr_clr: int, *, recursive: bool = True) -> None:
    """mount_setattr(2) on the mount ``fd`` refers to (AT_EMPTY_PATH), e.g. a detached tree
    from ``open_tree(OPEN_TREE_CLONE)``; raises OSError."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    res = _libc.syscall(ctypes.c_long(_NR_MOUNT_SETATTR), ctypes.c_int(fd), b"",
                        ctypes.c_uint(flags), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    _check(int(res), "mount_setattr", f"fd {fd}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), "umount2", target)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = 155 if os.uname().machine == "x86_64" else 41
    _check(int(_libc.syscall(nr, _b(new_root), _b(put_old))), "pivot_root", new_root)


def sethostname(name: str) -> None:
    data = name.encode()
    _check(_libc.sethostname(data, len(data)), "sethostname")


def setdomainname(name: str) -> None:
    data = name.encode()
    _check(_libc.setdomainname(data, len(data)), "setdomainname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) for the calling thread with 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(hdr), data), "capset")


def capget() -> tuple[int, int, int]:
    """Return (effective, permitted, inheritable) of the calling thread."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(hdr), data), "capget")
    eff = data[0].effective | (data[1].effective << 32)
    perm = data[0].permitted | (data[1].permitted << 32)
    inh = data[0].inheritable | (data[1].inheritable << 32)
    return eff, perm, inh


def ioctl_int(fd: int, request: int, arg: int = 0) -> None:
    _libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]
    _check(_libc.ioctl(fd, request, arg), f"ioctl({request:#x})")


TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414


def set_winsize(fd: int, rows: int, cols: int) -> None:
    """TIOCSWINSZ on a pty (master or slave)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


# inotify, for cgroup v2 memory.events -----------------------------------------------------------

IN_MODIFY = 0x00000002
IN_CLOEXEC = os.O_CLOEXEC
IN_NONBLOCK = os.O_NONBLOCK
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


def inotify_init1(flags: int) -> int:
    return _check(_libc.inotify_init1(flags), "inotify_init1")


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    return _check(_libc.inotify_add_watch(fd, _b(path), mask), "inotify_add_watch", path)
