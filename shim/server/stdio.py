"""Open the stdio that containerd names in Create/Exec, for handing to a workload process.

containerd passes paths (shim-protocol.md §9.4): empty means none, a bare path or ``fifo://``
is a FIFO, ``file://`` a file to append to. stdout/stderr FIFOs are opened O_RDWR so the open
never blocks while containerd has no reader yet (stack.md §2.7), and writes never fail with
EPIPE if the reader goes away; stdin is opened O_RDONLY|O_NONBLOCK and then made blocking.
``stdout == stderr`` yields one open file used for both. The caller owns the returned fds and
closes them once the workload has its copies.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from runwasm.shim.common.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class StdioPaths:
    """The stdio of a process as containerd names it (FIFO paths, or a terminal)."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


def _parse(uri: str, what: str) -> tuple[str, str]:
    if "://" not in uri:
        return "fifo", uri
    scheme, _, rest = uri.partition("://")
    if scheme in ("fifo", "file"):
        return scheme, rest
    raise InvalidArgumentError(
        f"unsupported {what} uri {uri!r}: expected a path, fifo:// or file:// (binary:// log drivers are not supported)")


def _open_out(uri: str, what: str) -> int:
    scheme, path = _parse(uri, what)
    try:
        if scheme == "file":
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        raise InvalidArgumentError(f"failed to open {what} {path!r}: {err.strerror}") from err


def _open_in(uri: str) -> int:
    _scheme, path = _parse(uri, "stdin")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise InvalidArgumentError(f"failed to open stdin {path!r}: {err.strerror}") from err
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    return fd


@contextmanager
def opened(paths: StdioPaths) -> Iterator[dict[str, int]]:
    """Yield {"stdin"?, "stdout"?, "stderr"?} fds; all are closed on exit from the block."""
    fds: dict[str, int] = {}
    try:
        if paths.stdin:
            fds["stdin"] = _open_in(paths.stdin)
        if paths.stdout:
            fds["stdout"] = _open_out(paths.stdout, "stdout")
        if paths.stderr:
            if paths.stderr == paths.stdout:
                fds["stderr"] = os.dup(fds["stdout"])
            else:
                fds["stderr"] = _open_out(paths.stderr, "stderr")
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def give_to(paths: StdioPaths, uid: int | None, gid: int | None) -> None:
    """Make ``uid``/``gid`` (runc options IoUid/IoGid) the owner of the stdio FIFOs, so a process
    whose root is mapped to them (a user namespace) can reopen ``/dev/stdout`` & co. as with
    runc, whose shim hands it pipes with that owner. The FIFOs are the task's own (containerd
    makes them per process). A ``file://`` or other non-FIFO target is refused: its owner is not
    the task's to change."""
    if uid is None and gid is None:
        return
    for what, uri in (("stdin", paths.stdin), ("stdout", paths.stdout), ("stderr", paths.stderr)):
        if not uri:
            continue
        scheme, path = _parse(uri, what)
        try:
            if scheme != "fifo" or not stat.S_ISFIFO(os.stat(path).st_mode):
                raise InvalidArgumentError(f"failed to give {what} {uri!r} to uid {uid} gid {gid} (IoUid/IoGid): "
                                           "expected a FIFO")
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        except OSError as err:
            raise InvalidArgumentError(f"failed to give {what} {path!r} to uid {uid} gid {gid} (IoUid/IoGid): "
                                       f"{err.strerror}") from err
