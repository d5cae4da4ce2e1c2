"""The container init: ``runwasm.linux.init:main(payload, fds)``, called by the shim's zygote.

Theory of operation
-------------------
The zygote has already forked us (pid 1 of a new pid namespace unless the spec has a new user
namespace, see namespaces.py), called setsid and closed every fd but the named ones. We run
``STEPS`` in order; each one applies one part of the runtime spec. Any exception before
``ready`` is reported on the control socket (``error`` with the class name and a message naming
the step, path or field and errno) and we exit 1. Then ``ready`` (with the pty master when
``process.terminal``), ``wait_start`` (EOF = abort, exit 1), startContainer hooks, stdio, the
late seccomp filter, execve. After ``start`` errors go to the workload's stderr and the exit
status is 127 (like a shell's "command not found").

The order of ``STEPS`` is the contract; each entry's comment says why it sits where it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from runwasm.linux import (
    credentials,
    devices,
    hooks,
    mounts,
    namespaces,
    netdev,
    paths,
    process,
    rootfs,
    sched,
    sysctl,
    terminal,
)
from runwasm.linux import seccomp as seccomp_step
from runwasm.linux.errors import LinuxError, SetupError
from runwasm.linux.payload import InitPayload
from runwasm.oci import steps
from runwasm.oci.control import report_error, wait_start
from runwasm.oci.runtime_spec import Process, RuntimeSpec, SpecError


@dataclass
class Ctx:
    p: InitPayload
    fds: dict[str, int]
    spec: RuntimeSpec
    proc: Process
    host_pid: int = 0
    new_ns: set[str] = field(default_factory=set)
    in_user_ns: bool = False
    has_mount_ns: bool = False
    pty_master: int | None = None
    pty_slave: int | None = None
    seccomp_filter: Any = None
    late_seccomp: bool = False
    exe: str = ""
    runtime_netns: int | None = None  # the runtime's network namespace, held for linux.netDevices

    def state(self, status: str) -> bytes:
        return hooks.state_json(self.p.container_id, status, self.host_pid, self.p.bundle, self.spec.annotations)


def _cgroup(c: Ctx) -> None:
    namespaces.join_cgroup(c.p.cgroup_procs)


def _create_runtime_hooks(c: Ctx) -> None:
    hooks.run("prestart", c.spec.hooks.prestart, c.state("creating"))
    hooks.run("createRuntime", c.spec.hooks.create_runtime, c.state("creating"))


def _join(c: Ctx) -> None:
    lin = c.spec.linux
    if lin is not None and lin.net_devices:
        c.runtime_netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    namespaces.join(namespaces.open_paths(lin.namespaces if lin else ()))


def _user(c: Ctx) -> None:
    if "user" in c.new_ns:
        lin = c.spec.linux
        assert lin is not None
        namespaces.new_user_ns(lin.uid_mappings, lin.gid_mappings)


def _unshare(c: Ctx) -> None:
    rest = c.new_ns - {"user"} - ({"pid"} if c.p.pid_ns_by_zygote else set())
    namespaces.unshare_rest(rest)
    if "pid" in rest:
        namespaces.fork_pid1()


def _net_devices(c: Ctx) -> None:
    if c.runtime_netns is not None and c.spec.linux is not None:
        netdev.move(c.spec.linux.net_devices, c.runtime_netns)
        os.close(c.runtime_netns)
        c.runtime_netns = None


def _propagation(c: Ctx) -> None:
    if c.has_mount_ns:
        rootfs.make_private(c.spec.linux.rootfs_propagation if c.spec.linux else "")


def _bind_rootfs(c: Ctx) -> None:
    if c.has_mount_ns:
        rootfs.parent_mount_private(c.p.rootfs)
        rootfs.bind_rootfs(c.p.rootfs)


def _mounts(c: Ctx) -> None:
    mounts.mount_all(c.p.rootfs, c.spec.mounts, c.p.cgroup_dirs)


def _dev(c: Ctx) -> None:
    dev_mounted = any(m.destination.rstrip("/") == "/dev" for m in c.spec.mounts)
    devices.setup_dev(c.p.rootfs, c.spec.linux.devices if c.spec.linux else (), c.in_user_ns, dev_mounted)


def _make_cwd(c: Ctx) -> None:
    target = mounts.secure_join(c.p.rootfs, c.proc.cwd)
    if not os.path.isdir(target):
        try:
            os.makedirs(target, 0o755, exist_ok=True)
        except OSError as err:
            raise SetupError(f"failed to create process.cwd {c.proc.cwd!r}: [errno {err.errno}] {err.strerror}") from err


def _create_container_hooks(c: Ctx) -> None:
    hooks.run("createContainer", c.spec.hooks.create_container, c.state("creating"))


def _pivot(c: Ctx) -> None:
    rootfs.pivot(c.p.rootfs, c.has_mount_ns)
    if c.has_mount_ns:
        # after the pivot: pivot_root refuses a shared new root (EINVAL), so rootfsPropagation
        # is applied to "/" once it is the container's root, as runc does
        rootfs.set_root_propagation("/", c.spec.linux.rootfs_propagation if c.spec.linux else "")


def _sysctl(c: Ctx) -> None:
    if c.spec.linux and c.spec.linux.sysctl:
        sysctl.apply(dict(c.spec.linux.sysctl))


def _readonly_paths(c: Ctx) -> None:
    if c.spec.linux:
        paths.readonly(c.spec.linux.readonly_paths)


def _masked_paths(c: Ctx) -> None:
    if c.spec.linux:
        paths.mask(c.spec.linux.masked_paths)


def _readonly_root(c: Ctx) -> None:
    if c.spec.root is not None and c.spec.root.readonly:
        rootfs.make_readonly()


def _uts(c: Ctx) -> None:
    if c.spec.hostname or c.spec.domainname:
        sysctl.set_names(c.spec.hostname, c.spec.domainname)


def _terminal(c: Ctx) -> None:
    if c.proc.terminal:
        c.pty_master, c.pty_slave = terminal.open_pty(c.proc.console_size)


def _resolve(c: Ctx) -> None:
    c.exe = process.resolve(c.proc.args[0], c.proc.env_map())


def _seccomp_compile(c: Ctx) -> None:
    if c.spec.linux and c.spec.linux.seccomp is not None:
        c.seccomp_filter = seccomp_step.compile_filter(c.spec.linux.seccomp)


def _memory_policy(c: Ctx) -> None:
    if c.spec.linux is not None:
        sched.set_memory_policy(c.spec.linux.memory_policy)


def _credentials(c: Ctx) -> None:
    c.late_seccomp = credentials.apply(c.proc, c.seccomp_filter, in_user_ns=c.in_user_ns)


Step = tuple[str, Callable[[Ctx], None]]

STEPS: tuple[Step, ...] = (
    # cgroup first: the cgroup namespace (unshared below) takes the current cgroup as its root,
    # and every later allocation is charged to the container
    ("cgroup", _cgroup),
    # runtime-namespace hooks before we leave the runtime's namespaces
    ("hooks.createRuntime", _create_runtime_hooks),
    # join path namespaces before creating new ones (a CRI pod's netns/ipc/uts are joined)
    ("namespaces.join", _join),
    # a new user namespace before the others so they are owned by it
    ("namespaces.user", _user),
    ("namespaces.unshare", _unshare),
    # host interfaces into the container's network namespace, now that it is ours (joined or new)
    ("network.devices", _net_devices),
    # mount work only happens inside our own mount namespace: make it private first
    ("rootfs.propagation", _propagation),
    ("rootfs.bind", _bind_rootfs),
    # spec mounts before /dev population (the spec mounts the /dev tmpfs)
    ("mounts", _mounts),
    ("devices", _dev),
    # cwd is created while the rootfs is still writable
    ("cwd.create", _make_cwd),
    # createContainer: container namespaces, before pivot_root (runtime spec)
    ("hooks.createContainer", _create_container_hooks),
    # compile seccomp while the host root is still visible: pyseccomp and libseccomp.so are
    # loaded from the host (after pivot_root they are not reachable); loading comes last
    ("seccomp.compile", _seccomp_compile),
    ("rootfs.pivot", _pivot),
    # after pivot: /proc is the container's, so sysctls and masked/readonly paths name its files
    ("sysctl", _sysctl),
    ("paths.readonly", _readonly_paths),
    ("paths.masked", _masked_paths),
    # root.readonly after everything that creates mountpoints or files in /
    ("rootfs.readonly", _readonly_root),
    # hostname needs CAP_SYS_ADMIN in the uts namespace: before capabilities are dropped
    ("uts", _uts),
    # the pty comes from the container's /dev/ptmx (after pivot) and is opened as root
    ("terminal", _terminal),
    ("resolve", _resolve),
    # the NUMA memory policy last before the workload's own allocations (inherited by execve)
    ("memory_policy", _memory_policy),
    # rlimits, cwd, caps, user, no_new_privs (credentials.py states their internal order)
    ("credentials", _credentials),
)


def _context(payload: dict[str, Any], fds: dict[str, int]) -> Ctx:
    p = InitPayload.from_dict(payload)
    if p.spec.process is None or not p.spec.process.args:
        raise SpecError("invalid runtime spec: process.args: expected a non-empty array of strings, got none")
    c = Ctx(p=p, fds=fds, spec=p.spec, proc=p.spec.process, host_pid=int(os.readlink("/proc/self")))
    for ns in p.spec.linux.namespaces if p.spec.linux else ():
        if not ns.path:
            c.new_ns.add(ns.type)
    c.in_user_ns = any(ns.type == "user" for ns in (p.spec.linux.namespaces if p.spec.linux else ()))
    c.has_mount_ns = any(ns.type == "mount" for ns in (p.spec.linux.namespaces if p.spec.linux else ()))
    return c


def main(payload: dict[str, Any], fds: dict[str, int]) -> NoReturn:
    control = fds["control"]
    step = "payload"
    try:
        with steps.step("linux.init"):
            c = _context(payload, fds)
            for step, fn in STEPS:  # noqa: B007 - step is reported in the except below
                with steps.step(f"linux.{step}"):
                    fn(c)
    except BaseException as err:  # noqa: BLE001 - everything before ready is reported
        if not isinstance(err, LinuxError | SpecError):
            err = SetupError(f"failed at step {step!r}: {type(err).__name__}: {err}")
        elif not str(err).startswith(f"[{step}]"):
            err = type(err)(f"[{step}] {err}")
        report_error(control, err)
        os._exit(1)
    try:
        terminal.send_ready(control, c.pty_master)
    except Exception:  # noqa: BLE001 - the shim is gone: abort like on EOF
        os._exit(1)
    if c.pty_master is not None:
        os.close(c.pty_master)
    wait_start(control)
    run_user_process(c.fds, c.pty_slave, c.exe, c.proc, c.seccomp_filter if c.late_seccomp else None,
                     lambda: hooks.run("startContainer", c.spec.hooks.start_container, c.state("running")))


def run_user_process(fds: dict[str, int], pty_slave: int | None, exe: str, proc: Process, late_filter: Any,
                     before: Callable[[], None] | None = None) -> NoReturn:
    """After ``start``: optional hook, stdio, close fds, late seccomp, execve; errors -> 127."""
    try:
        if before is not None:
            before()
        process.dup_stdio(fds, pty_slave)
        # the last step: written (synchronously, to the shim's pipe) before execve replaces us
        steps.point("linux.exec", **{"process.executable.path": exe, "process.command": proc.args[0]})
        credentials.close_extra_fds()
        if late_filter is not None:
            seccomp_step.load(late_filter)
        process.execve(exe, proc.args, proc.env)
    except BaseException as err:  # noqa: BLE001
        try:
            os.write(2, f"runwasm: failed to run {proc.args[0]!r}: {err}\n".encode())
        finally:
            sys.stderr.flush()
            os._exit(127)
