"""Locate a module inside a container rootfs, with the rootfs acting as ``/``.

Stdlib only (the shim's router uses it before choosing an executor).

Rules:
- ``args[0]`` (its path part, see ``detect.parse_entrypoint``) that is absolute is resolved from
  the rootfs root; one containing ``/`` but relative is resolved against the spec's ``cwd``;
  a bare name is searched in the guest's ``PATH`` (from the spec env, default
  ``DEFAULT_PATH``), first regular file wins, as execvp does.
- Symlinks are followed with chroot semantics: an absolute target restarts from the rootfs
  root. A ``..`` that would climb above the rootfs root, from the path or from a symlink
  target, is refused with ``PathEscapeError`` rather than clamped: it means the image is
  trying to point outside itself.
- ``open_module`` opens the resolved file with ``O_NOFOLLOW`` and re-checks through
  ``/proc/self/fd`` that the opened inode is still inside the rootfs (guards against a swap
  between resolution and open).
"""

from __future__ import annotations

import os
import re
import stat
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from runwasm.wasm.errors import (
    InvalidEntrypointError,
    InvalidModuleError,
    ModuleNotFoundInRootfsError,
    ModulePermissionError,
    PathEscapeError,
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_SYMLINKS = 40
MAX_MODULE_BYTES = 1 << 30


_PROC_FD = re.compile(r"/proc/\d+/fd/\d+")  # compiled at import: the zygote's workloads inherit it


def _root(rootfs: Path | str) -> str:
    """``rootfs`` with symlinks resolved, except a ``/proc/<pid>/fd/<n>`` view of a directory
    (a rootfs mounted in another mount namespace, ``runwasm.shim.server.private_rootfs``):
    resolving that magic link would give its path in the host namespace, not the directory."""
    text = str(rootfs)
    if _PROC_FD.fullmatch(text):
        return text
    return os.path.realpath(text)


def resolve_in_rootfs(rootfs: Path | str, guest_path: str) -> Path:
    """Host path of ``guest_path`` (absolute, guest view) inside ``rootfs``.

    Every component except missing ones is followed; raises ``ModuleNotFoundInRootfsError``
    when a component does not exist or a non-directory is used as a directory,
    ``PathEscapeError`` on an escape, ``InvalidEntrypointError`` on a symlink loop.
    """
    root = _root(rootfs)
    parts: list[str] = []
    todo: deque[str] = deque(guest_path.split("/"))
    hops = 0
    while todo:
        name = todo.popleft()
        if name in ("", "."):
            continue
        if name == "..":
            if not parts:
                raise PathEscapeError(
                    f"failed to resolve {guest_path!r} in rootfs {root!r}: '..' climbs above the rootfs root"
                )
            parts.pop()
            continue
        host = os.path.join(root, *parts, name)
        try:
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError) as err:
            raise ModuleNotFoundInRootfsError(
                f"failed to resolve {guest_path!r} in rootfs {root!r}: "
                f"{'/' + '/'.join([*parts, name])!r} does not exist"
            ) from err
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_SYMLINKS:
                raise InvalidEntrypointError(
                    f"failed to resolve {guest_path!r} in rootfs {root!r}: too many levels of symbolic links"
                )
            target = os.readlink(host)
            if target.startswith("/"):
                parts = []
            todo.extendleft(reversed(target.split("/")))
            continue
        parts.append(name)
    return Path(root, *parts)


def _env_path(env: Sequence[str]) -> str:
    for item in env:
        if item.startswith("PATH="):
            return item[5:]
    return DEFAULT_PATH


def resolve_module_path(rootfs: Path | str, path: str, env: Sequence[str] = (), cwd: str = "/") -> Path:
    """Host path of the module named ``path`` (the path part of ``args[0]``), see module doc."""
    if not path:
        raise InvalidEntrypointError(
            "failed to resolve the module: args[0] has an empty module path "
            "(modules from OCI Wasm layers are not supported; put the module in the rootfs)"
        )
    if path.startswith("/"):
        return resolve_in_rootfs(rootfs, path)
    if "/" in path:
        return resolve_in_rootfs(rootfs, os.path.join(cwd or "/", path))
    searched: list[str] = []
    for directory in _env_path(env).split(":"):
        if not directory.startswith("/"):
            continue  # relative PATH entries are ignored, like a secure execvp
        searched.append(directory)
        try:
            host = resolve_in_rootfs(rootfs, os.path.join(directory, path))
        except ModuleNotFoundInRootfsError:
            continue
        if host.is_file():
            return host
    raise ModuleNotFoundInRootfsError(
        f"failed to resolve {path!r} in rootfs {str(rootfs)!r}: not found in PATH {':'.join(searched)!r}"
    )


def open_module(rootfs: Path | str, host_path: Path, root_fd: int | None = None) -> bytes:
    """Read the module file at ``host_path`` (from ``resolve_module_path``) safely:
    ``read_module(rootfs, host_path, open_module_fd(rootfs, host_path, root_fd))``."""
    return read_module(rootfs, host_path, open_module_fd(rootfs, host_path, root_fd))


def open_module_fd(rootfs: Path | str, host_path: Path, root_fd: int | None = None) -> int:
    """Open the module file (``O_NOFOLLOW``); the only step done with the container's credentials.

    With ``root_fd`` (an fd of the rootfs directory) the file is opened relative to it, so only
    the components inside the rootfs are permission-checked, as for a container process that
    sees the rootfs as ``/``. Raises ``ModulePermissionError`` if the caller's credentials may
    not open it, ``InvalidModuleError`` on any other failure.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        if root_fd is None:
            return os.open(host_path, flags)
        return os.open(os.path.relpath(host_path, os.path.realpath(rootfs)), flags, dir_fd=root_fd)
    except PermissionError as err:
        raise ModulePermissionError(f"failed to open module {str(host_path)!r} as uid {os.geteuid()} "
                                    f"gid {os.getegid()} groups {os.getgroups()}: {err.strerror}") from err
    except OSError as err:
        raise InvalidModuleError(f"failed to open module {str(host_path)!r}: {err.strerror}") from err


def read_module(rootfs: Path | str, host_path: Path, fd: int) -> bytes:
    """Check and read the opened module ``fd``, then close it.

    Raises ``InvalidModuleError`` if it is not a regular file or is larger than
    ``MAX_MODULE_BYTES``, ``PathEscapeError`` if the opened file is outside the rootfs.
    """
    root = os.path.realpath(rootfs)
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
        if not real.startswith(root.rstrip("/") + "/"):
            raise PathEscapeError(f"failed to open module {str(host_path)!r}: it resolves to {real!r}, outside rootfs {root!r}")
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidModuleError(
                f"failed to load module {str(host_path)!r}: expected a regular file, got mode {stat.filemode(st.st_mode)!r}"
            )
        if st.st_size > MAX_MODULE_BYTES:
            raise InvalidModuleError(
                f"failed to load module {str(host_path)!r}: {st.st_size} bytes is over the {MAX_MODULE_BYTES} byte limit"
            )
        chunks: list[bytes] = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
