"""Namespaces: join the cgroup, join ``path`` namespaces (setns), create the new ones (unshare).

Order (driven by ``init.py``; each constraint is a kernel rule):
1. ``join_cgroup`` first: before unsharing CLONE_NEWCGROUP (the new namespace's root is the
   cgroup we are in at that moment) and before anything allocates memory charged elsewhere.
2. ``open_paths`` opens every ``path`` namespace before the first setns: after setns(mnt) the
   paths would resolve in the other mount namespace.
3. ``join``: user first (it grants the capabilities needed to join the others), mount last.
4. ``new_user_ns``: a new user namespace before the other new namespaces, so that they are
   owned by it (mounting proc/sysfs checks the owner). Its id maps are written by a helper
   child that stays in the parent user namespace (a process inside may only map its own uid).
5. ``unshare_rest``: every other new namespace in one call. A new pid namespace only applies to
   children, so when the zygote could not make it (user namespace case) ``fork_pid1`` forks:
   the child is pid 1 and the parent stays as a relay that forwards signals and the exit status.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable

from runwasm.linux import syscalls as sc
from runwasm.linux.errors import SetupError
from runwasm.oci.runtime_spec import IdMapping, Namespace

JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


def _err(what: str, err: OSError) -> SetupError:
    return SetupError(f"failed to {what}: [errno {err.errno}] {os.strerror(err.errno or 0)}")


def join_cgroup(procs_files: Iterable[str]) -> None:
    for path in procs_files:
        try:
            with open(path, "w") as f:
                f.write("0")  # "0" is the writing process, whatever pid namespace it is in
        except OSError as err:
            raise _err(f"join cgroup {path!r}", err) from err


def open_paths(namespaces: Iterable[Namespace]) -> list[tuple[str, int]]:
    out = []
    for ns in namespaces:
        if not ns.path:
            continue
        try:
            out.append((ns.type, os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)))
        except OSError as err:
            for _, fd in out:
                os.close(fd)
            raise _err(f"open linux.namespaces {ns.type} path {ns.path!r}", err) from err
    return sorted(out, key=lambda t: JOIN_ORDER.index(t[0]))


def join(opened: list[tuple[str, int]]) -> None:
    for kind, fd in opened:
        try:
            sc.setns(fd, sc.NAMESPACE_FLAGS[kind])
        except OSError as err:
            raise _err(f"join {kind} namespace (setns)", err) from err
        finally:
            os.close(fd)


def _format(maps: tuple[IdMapping, ...]) -> str:
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)


def new_user_ns(uid_maps: tuple[IdMapping, ...], gid_maps: tuple[IdMapping, ...]) -> None:
    """unshare(CLONE_NEWUSER) and have a helper in the parent namespace write our id maps."""
    host_pid = int(os.readlink("/proc/self"))  # our pid as the (still host) /proc sees it
    r, w = os.pipe()
    er, ew = os.pipe()
    helper = os.fork()
    if helper == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(w)
            os.close(er)
            os.read(r, 1)
            for name, maps in (("uid_map", uid_maps), ("gid_map", gid_maps)):
                if maps:
                    with open(f"/proc/{host_pid}/{name}", "w") as f:
                        f.write(_format(maps))
        except OSError as err:
            os.write(ew, f"{name}: [errno {err.errno}] {err.strerror}".encode())
            code = 1
        os._exit(code)
    os.close(r)
    os.close(ew)
    try:
        sc.unshare(sc.CLONE_NEWUSER)
    except OSError as err:
        os.close(w)
        os.waitpid(helper, 0)
        raise _err("create user namespace", err) from err
    os.write(w, b"x")
    os.close(w)
    msg = os.read(er, 4096).decode()
    os.close(er)
    _, status = os.waitpid(helper, 0)
    if status != 0:
        raise SetupError(f"failed to write linux.uidMappings/gidMappings: {msg or 'helper failed'}")
    try:
        # become root of the new namespace (our host uid may not be mapped)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError as err:
        raise _err("become root in the new user namespace (is container uid 0 mapped?)", err) from err


def unshare_rest(kinds: Iterable[str]) -> None:
    flags = 0
    for k in kinds:
        flags |= sc.NAMESPACE_FLAGS[k]
    if flags:
        try:
            sc.unshare(flags)
        except OSError as err:
            raise _err(f"unshare namespaces {sorted(kinds)}", err) from err


def fork_pid1() -> None:
    """Fork after unshare(CLONE_NEWPID); return in the child (pid 1). The parent relays signals
    to the child and exits with its status; the child dies with the relay (PDEATHSIG)."""
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent and os.getppid() != 0:
            os._exit(1)
        return

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
              signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT):
        signal.signal(s, forward)
    for fd in range(3, 1024):  # the child owns the control socket and stdio now
        try:
            os.close(fd)
        except OSError:
            pass
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    sys.stdout.flush()
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
