"""Plain Wasm tasks spawned without the zygote: the server plans, ``runwasm-wasm-exec`` confines.

Runs in the shim server. A Wasm task whose ``wasmtime-min`` plan an earlier task of the same
module and configuration vouched for (``runwasm.wasm.fast_min``: its cached link-check verdict and
precompiled artifact) needs no Python in its own process: the server makes that plan itself
(``plan``: the module read and checked, the verdict, the artifact fd, the preopens, the argv) and
``posix_spawn``\\s the small C program ``runwasm-wasm-exec`` (``wasm_exec.c`` next to this file,
built by ``make setup`` into ``<venv>/libexec/runwasm/``), which joins the task cgroup, checks
that the container's user may open the module, drops to the spec's credentials, reports
``ready``, waits for ``start`` and execs ``wasmtime-min`` (``spawn``). The zygote's fork of a
~25 MiB Python process and the workload's ~12 ms of Python before its exec (mostly copy-on-write
faults) are gone from every such task; what the task runs, with which credentials, limits and
stdio, and what Create reports on failure, are the same as on the zygote's route
(``runwasm.shim.spawn.wasm_workload``, ``runwasm.wasm.child``).

``plan`` returns None, having kept nothing open, for anything it cannot vouch for, and the task
takes the zygote's route, which makes the same decisions and reports the errors: no helper
(``$RUNWASM_WASM_EXEC`` = ``off``, or not built: no C compiler at install), a server that is not
root, a step pipe (tracing, OTel metrics or the debug log want the workload's steps), a private
rootfs namespace, a pid namespace, a pty, a ``linux.seccomp`` profile that denies what
``wasmtime-min`` or its exec needs (the zygote's route fails Create or runs the task in
process, naming the syscalls), ``linux.memoryPolicy``,
``process.scheduler``/``ioPriority``/``apparmorProfile``/``selinuxLabel``, an rlimit type or a
capability this server does not know, the module not a regular file readable by the server or
not a core module, no verdict, no artifact, a networked sandbox or any reason of
``min_run.why_in_process``.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runwasm.shim.common.statefile import process_start_time
from runwasm.shim.spawn.zygote import RESET_SIGNALS, Spawned, SpawnError

log = logging.getLogger(__name__)

HELPER = "runwasm-wasm-exec"
HELPER_ENV = "RUNWASM_WASM_EXEC"
"""A path to the helper instead of the installed one; ``off``: never spawn natively."""
WASM_ENTRY = "runwasm.shim.spawn.wasm_workload:main"
NATIVE_MARK = "spawned by runwasm-wasm-exec"
"""In the one log line a server writes the first time it spawns a task natively (``runwasm stress``
names the executor from it)."""
STDIO = (("stdin", "-0"), ("stdout", "-1"), ("stderr", "-2"))

_helper: tuple[str | None] | None = None  # looked up once per server
_cli_env: dict[str, str] | None = None  # the server's environment does not change
_announced = False


def helper_path() -> str | None:
    """The helper to spawn, or None: ``$RUNWASM_WASM_EXEC`` (``off``: None), else
    ``<venv>/libexec/runwasm/runwasm-wasm-exec`` next to the interpreter when it is executable."""
    global _helper
    if _helper is None:
        env = os.environ.get(HELPER_ENV)
        if env == "off":
            found = None
        elif env:
            found = env if os.access(env, os.X_OK) else None
            if found is None:
                log.warning("%s=%r is not an executable file: Wasm tasks are forked by the zygote", HELPER_ENV, env)
        else:
            path = os.path.join(os.path.dirname(os.path.dirname(sys.executable)), "libexec", "runwasm", HELPER)
            found = path if os.access(path, os.X_OK) else None
        _helper = (found,)
    return _helper[0]


def looks_wasm(args: Sequence[str]) -> bool:
    """Whether a container with ``process.args`` ``args`` looks like a Wasm task (``args[0]``
    names a ``.wasm``/``.wat`` file, with or without ``#export``, or nothing: an image's Wasm
    layer). Only a hint for when to start the zygote (``Zygote.prestart``); the router decides."""
    return not args or not args[0] or args[0].partition("#")[0].endswith((".wasm", ".wat"))


def bundle_looks_wasm(bundle: str) -> bool:
    """``looks_wasm`` of ``<bundle>/config.json``; True when it cannot be read or parsed (the
    zygote then starts at the first spawn that needs it, as for any Wasm server; Create reports
    what is wrong with the spec). Never raises: the server calls it before it serves anything."""
    import json

    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            args = json.load(f).get("process", {}).get("args") or []
        return looks_wasm([str(a) for a in args])
    except Exception:  # noqa: BLE001 - only a hint (a spec nested too deeply is a RecursionError)
        return True


@dataclass
class NativePlan:
    """What ``spawn`` hands to the helper: its argv (up to ``--``, then ``wasmtime-min``'s) and
    environment (``http_serve.cli_environ``), the fds of the plan it must have at their own
    numbers (the CLI, the module's artifact, the preopens, the rootfs for the open check), all
    owned by the plan and closed by the server after the spawn."""

    argv: list[str]
    env: dict[str, str]
    owned: list[int]
    where: str

    def close(self) -> None:
        for fd in self.owned:
            os.close(fd)


def plan(entry: str, payload: Mapping[str, Any], named: Mapping[str, int], *, pidns: str | None = None,
         pty: bool = False) -> NativePlan | None:
    """The native spawn of this workload, or None when the zygote's route must take it (see module
    doc). Never raises for the task's own faults: those are the zygote route's to report."""
    if entry != WASM_ENTRY or pidns or pty or os.geteuid() != 0 or helper_path() is None:
        return None
    if any(name in named for name in ("trace", "steps", "rootns")):
        return None
    if payload.get("memoryPolicy") is not None:
        return None
    try:
        return _plan(payload, named)
    except Exception as err:  # noqa: BLE001 - the zygote's route makes the same checks and reports them
        log.debug("native spawn not planned (%s: %s): the zygote forks the workload", type(err).__name__, err)
        return None


def _confinement_args(proc: Any) -> list[str] | None:
    """The helper's credential options for ``proc`` (``runwasm.oci.runtime_spec.Process``), as
    ``wasm_workload.LinuxConfinement`` applies them; None for what only the zygote's route does."""
    from runwasm.linux import capabilities
    from runwasm.linux.limits import _NAMES as RLIMITS
    from runwasm.shim.spawn.wasm_workload import after_exec_sets

    if proc.scheduler is not None or proc.io_priority is not None or proc.apparmor_profile or proc.selinux_label:
        return None
    user = proc.user
    args = ["-u", str(user.uid), "-g", str(user.gid), "-G", ",".join(str(g) for g in user.additional_gids),
            "-m", f"{user.umask if user.umask is not None else 0o022:o}"]
    for i, rl in enumerate(proc.rlimits):
        if rl.type not in RLIMITS:
            return None
        soft = "inf" if rl.soft >= 2**63 - 1 else str(rl.soft)
        hard = "inf" if rl.hard >= 2**63 - 1 else str(rl.hard)
        args += ["-r", f"{i}:{rl.type}:{RLIMITS[rl.type]}:{soft}:{hard}"]
    if proc.oom_score_adj is not None:
        args += ["-s", str(proc.oom_score_adj)]
    caps = proc.capabilities
    if caps is not None:
        args += ["-E", f"{capabilities.mask_of(caps.effective, 'effective'):x}",
                 "-b", f"{capabilities.mask_of(caps.bounding, 'bounding'):x}"]
        for name in caps.ambient:
            args += ["-A", str(capabilities.NUMBERS[name])]
        if not caps.ambient:
            args += ["-A", ""]  # the ambient set is cleared all the same
    sets = after_exec_sets(proc)
    if sets is not None:
        args += ["-S", f"{sets[0]:x}:{sets[1]:x}:{sets[2]:x}"]
    if proc.no_new_privileges:
        args += ["-n", "1"]
    return args


def _plan(payload: Mapping[str, Any], named: Mapping[str, int]) -> NativePlan | None:
    from runwasm.oci.runtime_spec import parse_process
    from runwasm.wasm.fast_min import min_route, vouched
    from runwasm.wasm.http_serve import DirHandle, cli_environ
    from runwasm.wasm.min_run import prepare_min
    from runwasm.wasm.node_key import cache_dir_from
    from runwasm.wasm.payload import WasmTaskPayload
    from runwasm.wasm.preopen import close_preopens, guest_env, open_preopens
    from runwasm.wasm.resolve import read_module, resolve_module_path

    proc = parse_process(payload["process"], source="<wasm payload>")
    confine = _confinement_args(proc)
    if confine is None:
        return None
    p = WasmTaskPayload.from_json(payload["task"])
    route = min_route(p)
    if route is None:
        return None
    sandbox, path, export = route
    cache_dir = cache_dir_from(p.cache_dir)
    preopens = open_preopens(p, sandbox)
    owned: list[int] = []
    try:
        check: list[str] = []
        filter_args = _filter(payload.get("seccomp"), proc, owned)
        if filter_args is None:
            return None
        if p.module_file is not None:  # the image's Wasm layer: read as the server, as the workload does
            with open(p.module_file, "rb") as f:
                data = f.read()
            where = p.module_name or p.module_file
        else:
            host = resolve_module_path(p.rootfs, path, p.env, p.cwd)
            rel = os.path.relpath(host, os.path.realpath(p.rootfs))
            # O_PATH first: the server (root) opens for reading only a regular file, never a
            # device or FIFO a rootfs may hold; anything else is the zygote route's to refuse
            path_fd = os.open(rel, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=preopens[0].fd)
            try:
                st = os.fstat(path_fd)
                if not stat.S_ISREG(st.st_mode):
                    return None
                fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            finally:
                os.close(path_fd)
            data = read_module(p.rootfs, host, fd)  # closes fd
            where = f"{path} (host {host})"
            root = os.dup(preopens[0].fd)
            owned.append(root)
            check = ["-o", f"{root}:{st.st_dev}:{st.st_ino}", "-P", rel, "-H", str(host)]
        if not vouched(data, sandbox, export, cache_dir):
            return None
        serve = prepare_min(data, p.args, tuple(guest_env(p)), p.cwd,
                            [DirHandle(x.host, x.guest, x.mutable, x.fd) for x in preopens], sandbox, export,
                            where, cache_dir, _Views(), compile=False)
        owned += [serve.cli_fd, *serve.fds]
        argv = [HELPER, "-c", str(named["control"]), "-x", str(serve.cli_fd), "-w", where, *confine, *check,
                *filter_args]
        for fd in serve.fds:  # the module's artifact, the preopens: wasmtime-min inherits them
            argv += ["-k", str(fd)]
        for procs in payload.get("cgroup_procs") or ():
            from runwasm.linux.cgroup_join import self_join_file

            argv += ["-j", self_join_file(procs)]
        for name, opt in STDIO:
            if name in named:
                argv += [opt, str(named[name])]
        argv += ["--", serve.program, *serve.argv]
        global _cli_env
        if _cli_env is None:
            _cli_env = cli_environ(os.environ)
        native, owned = NativePlan(argv, _cli_env, owned, where), []
        return native
    finally:
        for fd in owned:
            os.close(fd)
        close_preopens(preopens)


def _filter(doc: Any, proc: Any, owned: list[int]) -> list[str] | None:
    """The helper's options for ``linux.seccomp`` (``doc``): the filter compiled as the workload
    compiles it (``runwasm.linux.seccomp``), exported as its BPF program into a memfd (added to
    ``owned``), loaded by the helper right before the exec; without noNewPrivileges
    CAP_SYS_ADMIN is kept until then (``-a 1``), as ``LinuxConfinement`` does. None when the
    profile denies what the runtime or the exec needs (``LinuxConfinement.check``/
    ``unmet_exec``): the zygote's route fails Create or runs the task in process, saying why."""
    if doc is None:
        return []
    from runwasm.linux import seccomp as seccomp_step
    from runwasm.wasm.confine import CAPSET_NEED, EXEC_SYSCALLS

    drops_later = not proc.no_new_privileges and (proc.capabilities is not None or proc.user.uid != 0)
    if seccomp_step.unmet(doc, [*EXEC_SYSCALLS, *((CAPSET_NEED,) if drops_later else ())]):  # EXEC_ has RUNTIME_
        return None
    flt = seccomp_step.compile_filter(doc)
    fd = os.memfd_create("runwasm-seccomp", os.MFD_CLOEXEC)
    owned.append(fd)
    with os.fdopen(fd, "wb", closefd=False) as f:
        flt.export_bpf(f)
    return ["-F", str(fd), *(("-a", "1") if not proc.no_new_privileges else ())]


class _Views:
    """``DirConfinement`` for ``prepare_min``: a read-only preopen (a read-only rootfs, a ``ro``
    bind mount) is a detached read-only clone of its mount (``runwasm.linux.task_net``), made here
    as the workload makes it, in the same mount namespace (a private rootfs namespace never takes
    this route), with root's credentials."""

    def readonly_dir(self, fd: int, where: str) -> int:
        from runwasm.linux.task_net import readonly_clone

        return readonly_clone(fd, where)


def spawn(native: NativePlan, named: Mapping[str, int]) -> Spawned:
    """``posix_spawn`` the helper as ``native`` says: a new session, default signal dispositions,
    an empty mask; fd 2 the workload's ``log`` (as the zygote gives it), the control socket, the
    stdio and the plan's fds at their own numbers (which clears their close-on-exec). Closes what
    the plan owned. Raises SpawnError when the kernel refuses."""
    helper = helper_path()
    assert helper is not None
    actions: list[tuple[int, ...]] = []
    if "log" in named and named["log"] != 2:
        actions.append((os.POSIX_SPAWN_DUP2, named["log"], 2))
    keep = {named["control"], *(named[n] for n, _ in STDIO if n in named), *native.owned}
    for fd in sorted(keep):
        actions.append((os.POSIX_SPAWN_DUP2, fd, fd))
    try:
        pid = os.posix_spawn(helper, native.argv, native.env,
                             file_actions=actions, setsid=True, setsigmask=(), setsigdef=RESET_SIGNALS)
    except OSError as err:
        raise SpawnError(f"failed to spawn {helper}: {err}") from err
    finally:
        native.close()
    start_time = process_start_time(pid)  # our own child: not reaped before the loop runs again
    if not start_time:
        raise SpawnError(f"workload process {pid} vanished before its start time could be read")
    global _announced
    if not _announced:
        _announced = True
        log.info("Wasm tasks whose plan the server makes are %s (%s), without a zygote fork", NATIVE_MARK, helper)
    return Spawned(pid, start_time)
