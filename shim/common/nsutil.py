"""The two namespace syscalls Python 3.11 lacks (os.unshare/os.setns arrived in 3.12)."""

from __future__ import annotations

import ctypes
import os

CLONE_NEWPID = 0x20000000

_libc = ctypes.CDLL(None, use_errno=True)


def unshare(flags: int) -> None:
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare({flags:#x}): {os.strerror(err)}")


def setns(fd: int, nstype: int) -> None:
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({fd}, {nstype:#x}): {os.strerror(err)}")


PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper() -> None:
    if _libc.prctl(ctypes.c_int(PR_SET_CHILD_SUBREAPER), ctypes.c_ulong(1), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")
