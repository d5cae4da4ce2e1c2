"""An exec in a running container: ``runwasm.linux.enter:main(payload, fds)``.

The zygote already joined the init's pid namespace (``pidns="/proc/<init>/ns/pid"``), so we
are a member of it. Order: join the cgroup (before setns(cgroup), for the same reason as init)
-> open /proc/<init>/root and every /proc/<init>/ns/* we need (before any setns: afterwards
/proc is another namespace's) -> setns user first, mount last -> chroot to the init's root
(covers the chroot-without-mount-namespace case; after setns(mnt) our root is the namespace's)
-> terminal -> resolve -> the container's memory policy -> credentials -> ready -> start -> execve.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

from runwasm.linux import namespaces, process, sched, terminal
from runwasm.linux import seccomp as seccomp_step
from runwasm.linux import syscalls as sc
from runwasm.linux.credentials import apply as apply_credentials
from runwasm.linux.errors import LinuxError, NotFoundError, SetupError
from runwasm.linux.init import run_user_process
from runwasm.linux.payload import ExecPayload
from runwasm.oci.control import report_error, wait_start
from runwasm.oci.runtime_spec import SpecError


def _enter(p: ExecPayload) -> None:
    namespaces.join_cgroup(p.cgroup_procs)
    base = f"/proc/{p.init_pid}"
    try:
        root = os.open(f"{base}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise NotFoundError(f"failed to enter container {p.container_id!r}: init pid {p.init_pid} is gone") from err
    opened: list[tuple[str, int]] = []
    try:
        for kind in namespaces.JOIN_ORDER:
            if kind not in p.namespaces or kind == "pid":  # pid: the zygote joined it
                continue
            opened.append((kind, os.open(f"{base}/ns/{sc.NAMESPACE_FILES[kind]}", os.O_RDONLY | os.O_CLOEXEC)))
    except OSError as err:
        raise SetupError(f"failed to open namespaces of init pid {p.init_pid}: [errno {err.errno}] {err.strerror}") from err
    if "user" in p.namespaces:
        same = os.stat(f"{base}/ns/user").st_ino == os.stat("/proc/self/ns/user").st_ino
        if same:  # setns into our own user namespace is EINVAL
            for k, fd in opened:
                if k == "user":
                    os.close(fd)
            opened = [(k, fd) for k, fd in opened if k != "user"]
    namespaces.join(opened)
    try:
        os.fchdir(root)
        os.chroot(".")
        os.chdir("/")
    except OSError as err:
        raise SetupError(f"failed to chroot into the container root: [errno {err.errno}] {err.strerror}") from err
    finally:
        os.close(root)


def main(payload: dict[str, Any], fds: dict[str, int]) -> NoReturn:
    control = fds["control"]
    try:
        p = ExecPayload.from_dict(payload)
        # compiled before entering: pyseccomp/libseccomp are loaded from the host root
        flt = seccomp_step.compile_filter(p.seccomp) if p.seccomp is not None else None
        _enter(p)
        master = slave = None
        if p.process.terminal:
            master, slave = terminal.open_pty(p.process.console_size)
        if not p.process.args:
            raise SpecError("invalid process spec: process.args: expected a non-empty array of strings, got none")
        exe = process.resolve(p.process.args[0], p.process.env_map())
        sched.set_memory_policy(p.memory_policy)
        late = apply_credentials(p.process, flt, in_user_ns="user" in p.namespaces)
    except BaseException as err:  # noqa: BLE001 - everything before ready is reported
        if not isinstance(err, LinuxError | SpecError):
            err = SetupError(f"failed to set up exec: {type(err).__name__}: {err}")
        report_error(control, err)
        os._exit(1)
    try:
        terminal.send_ready(control, master)
    except Exception:  # noqa: BLE001
        os._exit(1)
    if master is not None:
        os.close(master)
    wait_start(control)
    run_user_process(fds, slave, exe, p.process, flt if late else None)
