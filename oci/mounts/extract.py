"""Hardened tar extractor for the fallback rungs (no EROFS mount available).

Guarantees, whatever the tar contains:

* nothing is written outside ``dest``: names with ``..`` or that are empty are refused,
  absolute names are made relative, and every path is walked component by component with
  ``O_NOFOLLOW | O_DIRECTORY`` directory fds, so a symlink planted by the layer (or an earlier
  member) can never redirect a later write;
* hard links must name an earlier regular member of the same layer (checked the same way);
* whiteouts: with ``overlay_whiteouts`` they become char 0:0 devices and
  ``trusted.overlay.opaque=y`` (overlayfs lower-dir form); otherwise (flattening onto the layers
  below) ``.wh.<name>`` deletes ``<name>`` and ``.wh..wh..opq`` empties the directory.

On error ``InvalidArgumentError`` is raised; the caller removes the partial tree.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from runwasm.oci.errors import InvalidArgumentError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(name: str) -> list[str]:
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts:
        raise InvalidArgumentError(f"failed to extract {name!r}: path contains '..'")
    return parts


@contextlib.contextmanager
def _open_parent(root_fd: int, parts: list[str], create: bool) -> Iterator[int]:
    """Yield a dir fd for the parent of ``parts`` without following any symlink."""
    fd = os.dup(root_fd)
    try:
        for comp in parts[:-1]:
            try:
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(comp, 0o755, dir_fd=fd)
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except OSError as err:
                raise InvalidArgumentError(
                    f"failed to extract {'/'.join(parts)!r}: {comp!r} is not a directory (symlink?)") from err
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def _remove(dir_fd: int, name: str) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            _clear_dir(fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _clear_dir(fd: int) -> None:
    for name in os.listdir(fd):
        _remove(fd, name)


_HOST_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM}


def _member_error(m: tarfile.TarInfo, dest: Path, err: OSError) -> OSError | InvalidArgumentError:
    """What the layer's content made a syscall refuse is InvalidArgumentError naming the member;
    the host's own trouble (disk full, I/O error) stays the OSError it is."""
    if err.errno in _HOST_ERRNOS:
        return err
    return InvalidArgumentError(f"failed to extract {m.name!r} into {str(dest)!r}: {err.strerror or err}")


def _apply_dir_meta(root_fd: int, parts: list[str], m: tarfile.TarInfo) -> None:
    """Deferred metadata of directory member ``m``, unless a later member replaced or removed it
    (then the path may now be a symlink, possibly out of the tree: never follow it)."""
    with contextlib.ExitStack() as stack:
        try:
            pfd = stack.enter_context(_open_parent(root_fd, parts, create=False))
            st = os.stat(parts[-1], dir_fd=pfd, follow_symlinks=False)
        except (FileNotFoundError, InvalidArgumentError):
            return  # a parent or the directory itself was replaced or removed by a later member
        if stat.S_ISDIR(st.st_mode):
            _apply_meta(pfd, parts[-1], m)


def _apply_meta(dir_fd: int, name: str, m: tarfile.TarInfo) -> None:
    os.chown(name, m.uid, m.gid, dir_fd=dir_fd, follow_symlinks=False)
    if not m.issym():
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise InvalidArgumentError(f"failed to set the mode of {m.name!r}: it is a symlink")
        os.chmod(name, m.mode & 0o7777, dir_fd=dir_fd)  # not a symlink: chmod cannot leave the tree
        for key, value in m.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                raw = value.encode("utf-8", "surrogateescape")
                try:
                    os.setxattr(f"/proc/self/fd/{dir_fd}/{name}", key[13:], raw, follow_symlinks=False)
                except OSError as err:
                    raise InvalidArgumentError(f"failed to set xattr {key[13:]!r} on {m.name!r}: {err}") from err
    mtime_ns = int(float(m.pax_headers.get("mtime", m.mtime)) * 1e9)
    os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


def extract_tar(src: IO[bytes], dest: Path, *, overlay_whiteouts: bool) -> None:
    """Extract the uncompressed tar stream ``src`` into ``dest`` (created if missing)."""
    dest.mkdir(parents=True, exist_ok=True)
    root_fd = os.open(dest, _DIR_FLAGS)
    dirs: list[tuple[list[str], tarfile.TarInfo]] = []
    try:
        with tarfile.open(fileobj=src, mode="r|", errorlevel=2) as tar:
            for m in tar:
                parts = _parts(m.name)
                if not parts:
                    continue
                try:
                    with _open_parent(root_fd, parts, create=True) as pfd:
                        _extract_one(tar, m, parts, pfd, root_fd, overlay_whiteouts, dirs)
                except OSError as err:
                    raise _member_error(m, dest, err) from err
        for parts, m in reversed(dirs):  # directory metadata last (mtimes, read-only modes)
            try:
                _apply_dir_meta(root_fd, parts, m)
            except OSError as err:
                raise _member_error(m, dest, err) from err
    except (tarfile.TarError, EOFError) as err:
        raise InvalidArgumentError(f"failed to extract layer into {str(dest)!r}: {err}") from err
    finally:
        os.close(root_fd)


def _extract_one(tar: tarfile.TarFile, m: tarfile.TarInfo, parts: list[str], pfd: int, root_fd: int,
                 overlay: bool, dirs: list[tuple[list[str], tarfile.TarInfo]]) -> None:
    name = parts[-1]
    if name == ".wh..wh..opq":
        if overlay:
            os.setxattr(f"/proc/self/fd/{pfd}", "trusted.overlay.opaque", b"y")
        else:
            _clear_dir(pfd)
        return
    if name.startswith(".wh."):
        target = name[4:]
        if not target or target in (".", ".."):
            raise InvalidArgumentError(f"failed to extract whiteout {m.name!r}: empty target")
        _remove(pfd, target)
        if overlay:
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
        return
    if m.isdir():
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                _remove(pfd, name)
                os.mkdir(name, 0o700, dir_fd=pfd)
        except FileNotFoundError:
            os.mkdir(name, 0o700, dir_fd=pfd)
        dirs.append((parts, m))
        return
    _remove(pfd, name)
    if m.isreg():
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
        with os.fdopen(fd, "wb") as out:
            fh = tar.extractfile(m)
            assert fh is not None
            shutil.copyfileobj(fh, out, 1 << 20)
    elif m.issym():
        if not m.linkname:
            raise InvalidArgumentError(f"failed to extract symlink {m.name!r}: empty target")
        os.symlink(m.linkname, name, dir_fd=pfd)
    elif m.islnk():
        tparts = _parts(m.linkname)
        if not tparts:
            raise InvalidArgumentError(f"failed to extract hard link {m.name!r}: empty target")
        try:
            with _open_parent(root_fd, tparts, create=False) as tfd:
                st = os.stat(tparts[-1], dir_fd=tfd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    raise InvalidArgumentError(
                        f"failed to extract hard link {m.name!r}: target {m.linkname!r} is not a regular file")
                os.link(tparts[-1], name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError as err:
            raise InvalidArgumentError(
                f"failed to extract hard link {m.name!r}: target {m.linkname!r} is not in the layer") from err
        return
    elif m.ischr() or m.isblk() or m.isfifo():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
        os.mknod(name, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
    else:
        raise InvalidArgumentError(f"failed to extract {m.name!r}: unsupported member type {m.type!r}")
    _apply_meta(pfd, name, m)
