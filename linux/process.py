"""The last mile shared by init and exec: cwd, executable lookup, stdio, execve.

``resolve`` runs before ``ready`` (a missing binary is a Create error, as with runc) and after
pivot_root/chroot, so PATH is searched inside the container with the spec's own PATH.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import NoReturn

from runwasm.linux.errors import NotFoundError, SetupError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def chdir(cwd: str) -> None:
    try:
        os.chdir(cwd)
    except OSError as err:
        raise SetupError(f"failed to chdir to process.cwd {cwd!r}: [errno {err.errno}] {err.strerror}") from err


def _executable(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


def resolve(arg0: str, env: Mapping[str, str]) -> str:
    """``process.args[0]`` as execve wants it: a path with a slash is used as is, a bare name
    is looked up in the spec's PATH (default: the usual one) inside the container."""
    if not arg0:
        raise NotFoundError("failed to find executable: process.args[0] is empty")
    if "/" in arg0:
        if not _executable(arg0):
            raise NotFoundError(f"failed to find executable {arg0!r} in the container: no such executable file")
        return arg0
    for d in (env.get("PATH") or DEFAULT_PATH).split(":"):
        candidate = os.path.join(d or ".", arg0)
        if _executable(candidate):
            return candidate
    raise NotFoundError(f"failed to find executable {arg0!r} in the container's PATH "
                        f"{env.get('PATH') or DEFAULT_PATH!r}")


def dup_stdio(fds: Mapping[str, int], pty_slave: int | None) -> None:
    """Put stdin/stdout/stderr (or the pty slave) on 0/1/2; a missing stream gets /dev/null."""
    null = -1
    for target, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        src = pty_slave if pty_slave is not None else fds.get(name)
        if src is None:
            if null < 0:
                null = os.open("/dev/null", os.O_RDWR)
            src = null
        if src != target:
            os.dup2(src, target, inheritable=True)
        else:
            os.set_inheritable(target, True)
    if null > 2:
        os.close(null)


def execve(path: str, args: tuple[str, ...], env: tuple[str, ...]) -> NoReturn:
    envd: dict[str, str] = {}
    for e in env:
        k, _, v = e.partition("=")
        envd[k] = v
    os.execve(path, list(args), envd)
