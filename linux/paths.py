"""``linux.maskedPaths`` and ``linux.readonlyPaths``.

Runs after pivot_root (paths are container paths, and /proc, /sys are the container's own
mounts). Masking a file binds /dev/null over it; masking a directory mounts an empty read-only
tmpfs. A missing path is skipped, as runc does. Read-only paths are bound onto themselves and
remounted read-only (nosuid/nodev/noexec kept).
"""

from __future__ import annotations

import errno
import os

from runwasm.linux import syscalls as sc
from runwasm.linux.errors import SetupError


def _err(what: str, path: str, err: OSError) -> SetupError:
    return SetupError(f"failed to {what} {path!r}: [errno {err.errno}] {os.strerror(err.errno or 0)}")


def mask(paths: tuple[str, ...]) -> None:
    for p in paths:
        try:
            if os.path.isdir(p):
                sc.mount("tmpfs", p, "tmpfs", sc.MS_RDONLY, None)
            else:
                sc.mount("/dev/null", p, None, sc.MS_BIND, None)
        except OSError as err:
            if err.errno == errno.ENOENT:
                continue
            raise _err("mask linux.maskedPaths", p, err) from err


def readonly(paths: tuple[str, ...]) -> None:
    for p in paths:
        try:
            sc.mount(p, p, None, sc.MS_BIND | sc.MS_REC, None)
            st = os.statvfs(p)
            flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY
            for bit, flag in ((os.ST_NOSUID, sc.MS_NOSUID), (os.ST_NODEV, sc.MS_NODEV),
                              (os.ST_NOEXEC, sc.MS_NOEXEC)):
                if st.f_flag & bit:
                    flags |= flag
            sc.mount(None, p, None, flags, None)
        except OSError as err:
            if err.errno == errno.ENOENT:
                continue
            raise _err("make linux.readonlyPaths entry read-only:", p, err) from err
