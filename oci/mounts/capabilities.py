"""Probe once per process what this kernel and process can mount (cached).

Probes really mount a tiny generated EROFS image and an overlay in a scratch directory, since
util-linux hides the difference between file-backed and loop mounts and versions lie.
``dm_verity`` follows containerd's test (``/sys/module/dm_verity``) plus a tool check.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runwasm.oci.mounts import syscalls

log = logging.getLogger(__name__)
_cached: Capabilities | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    erofs: bool  # erofs listed in /proc/filesystems
    erofs_file: bool  # file-backed EROFS mounts work (6.12+)
    erofs_loop: bool  # EROFS over a loop device works
    overlay: bool
    overlay_lowerdir_plus: bool
    dm_verity: bool
    notes: tuple[str, ...] = ()


def _filesystems() -> set[str]:
    try:
        with open("/proc/filesystems") as fh:
            return {line.split()[-1] for line in fh if line.strip()}
    except OSError:
        return set()


def probe(scratch: Path | None = None, *, refresh: bool = False) -> Capabilities:
    """Return the cached capabilities, probing on first use (or when ``refresh``)."""
    global _cached
    if _cached is not None and not refresh:
        return _cached
    base = Path(tempfile.mkdtemp(prefix="rw-probe-", dir=scratch))
    notes: list[str] = []
    try:
        _cached = _probe(base, notes)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    log.info("mount capabilities: %s", _cached)
    return _cached


def _try_umount(path: Path) -> None:
    try:
        syscalls.umount(path)
    except OSError as err:
        log.warning("probe: failed to unmount %s: %s", path, err)


def _probe(base: Path, notes: list[str]) -> Capabilities:
    from runwasm.oci.erofs.from_tar import tar_to_erofs

    fss = _filesystems()
    erofs_file = erofs_loop = overlay = lowerdir_plus = False
    img = base / "p.erofs"
    empty_tar = b"\0" * 1024
    tar_to_erofs(io.BytesIO(empty_tar), img, uuid=bytes(16))
    mnt = base / "m"
    mnt.mkdir()
    if "erofs" in fss:
        try:
            syscalls.mount_fs("erofs", str(img), str(mnt), readonly=True)
            erofs_file = erofs_loop = True  # loop is not needed; assume usable if file works
            _try_umount(mnt)
        except OSError as err:
            notes.append(f"erofs file-backed: {err}")
            if err.errno == errno.ENOTBLK and os.path.exists("/dev/loop-control"):
                try:
                    with syscalls.loop_device(img) as dev:
                        syscalls.mount_fs("erofs", dev, str(mnt), readonly=True)
                    erofs_loop = True
                    _try_umount(mnt)
                except OSError as err2:
                    notes.append(f"erofs loop: {err2}")
    if "overlay" in fss:
        lower, upper, work = base / "lo", base / "up", base / "wk"
        for d in (lower, upper, work):
            d.mkdir()
        try:
            syscalls._new_api_mount("overlay", "overlay", str(mnt), [("lowerdir+", str(lower)),
                                    ("upperdir", str(upper)), ("workdir", str(work))], 0)
            overlay = lowerdir_plus = True
            _try_umount(mnt)
        except OSError as err:
            notes.append(f"overlay lowerdir+: {err}")
            try:
                syscalls.mount_overlay([lower], mnt, upper, work)
                overlay = True
                _try_umount(mnt)
            except OSError as err2:
                notes.append(f"overlay: {err2}")
    dm = os.path.isdir("/sys/module/dm_verity") and shutil.which("veritysetup") is not None
    return Capabilities("erofs" in fss, erofs_file, erofs_loop, overlay, lowerdir_plus, dm, tuple(notes))
