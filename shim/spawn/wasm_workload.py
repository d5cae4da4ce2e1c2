"""Workload entry of a Wasm task: ``runwasm.shim.spawn.wasm_workload:main``, run by the zygote.

It gives ``runwasm.wasm.child.main`` a ``Confinement`` (``runwasm.wasm.confine``) made of the
Linux executor's kernel steps (``runwasm.linux``: identity, capabilities, limits, seccomp), so
a Wasm guest runs with the spec's ``process.user``, capability sets, noNewPrivileges, rlimits,
oomScoreAdj and ``linux.seccomp``, as a Linux container's process does. It lives in the shim
because ``runwasm.wasm`` may not import ``runwasm.linux`` (tests/test_layering.py).

Payload: ``{"task": WasmTaskPayload.to_json(), "process": process_to_json(...), "seccomp":
<linux.seccomp or null>, "memoryPolicy": <linux.memoryPolicy or null>, "network": <netns path, "" for a
new one, or null>, "cgroup_procs": [the task cgroup's cgroup.procs files], optional}``
(``network``: the spec's network namespace, entered only by a task that serves wasi:http; other
Wasm guests have no sockets). The workload joins the ``cgroup_procs`` cgroup first thing.

Order (see ``runwasm.wasm.confine`` for where each point falls):
- ``check``: compile the seccomp filter; refuse it (InvalidArgument) if it does not allow the
  syscalls wasmtime makes after it is loaded (``RUNTIME_SYSCALLS``, plus ``capset`` without
  noNewPrivileges), naming them. A filter is never skipped.
- ``as_guest``: effective uid/gid, supplementary groups and effective capabilities switched
  to the spec's (as when runc's execve checks the binary), saved ids kept at the server's
  (root), so the switch is undone after the module is read.
- ``drop``: rlimits and oomScoreAdj (need CAP_SYS_RESOURCE), process.scheduler,
  process.ioPriority and linux.memoryPolicy (``runwasm.linux.sched``), bounding set (CAP_SETPCAP),
  KEEPCAPS, setgroups/setresgid/setresuid, umask, capset, ambient, noNewPrivileges. The sets
  are the ones the process would have after runc's execve (``after_exec_sets``): a non-root
  guest keeps only its ambient capabilities, a root guest its bounding set. Without
  noNewPrivileges loading a filter needs CAP_SYS_ADMIN, so it is kept in the effective and
  permitted sets until ``before_guest`` (no guest code runs in between).
- ``before_guest``: load the filter; then, without noNewPrivileges, capset to the spec's sets.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn

from runwasm.linux import capabilities, identity, limits, sched, task_net
from runwasm.linux import seccomp as seccomp_step
from runwasm.linux import syscalls as sc
from runwasm.linux.cgroup_join import self_join_file  # at the top: the zygote preloads it
from runwasm.linux.errors import InvalidArgumentError, SetupError
from runwasm.oci.runtime_spec import Process, parse_process
from runwasm.oci.spec_reader import SpecReader
from runwasm.oci.spec_sched import MemoryPolicy, parse_memory_policy
from runwasm.wasm.confine import CAPSET_NEED, EXEC_SYSCALLS, RUNTIME_SYSCALLS, SyscallNeed

CAP_SYS_ADMIN = capabilities.NUMBERS["CAP_SYS_ADMIN"]


def after_exec_sets(proc: Process) -> tuple[int, int, int] | None:
    """(effective, permitted, inheritable) of the guest: what a process given the spec's sets
    has after execve of a binary without file capabilities (a Wasm module has none), as under
    runc; None means "keep what the process has" (root, no capabilities in the spec).

    capabilities(7): for uid 0 the file counts as fully capable, so permitted = inheritable |
    bounding | ambient (with noNewPrivileges never more than the permitted set before), and
    effective = permitted; for another uid permitted = effective = ambient. Ambient caps only
    take if in the spec's permitted and inheritable sets (runc ignores the others too).
    """
    c = proc.capabilities
    if c is None:
        return None if proc.user.uid == 0 else (0, 0, 0)
    bounding, perm = capabilities.mask_of(c.bounding, "bounding"), capabilities.mask_of(c.permitted, "permitted")
    inh = capabilities.mask_of(c.inheritable, "inheritable")
    ambient = capabilities.mask_of(c.ambient, "ambient") & perm & inh
    if proc.user.uid == 0:
        after = inh | bounding | ambient
        if proc.no_new_privileges:
            after &= perm
        return after, after, inh
    return ambient, ambient, inh


class LinuxConfinement:
    """``runwasm.wasm.confine.Confinement`` for ``proc`` and an optional seccomp profile."""

    def __init__(self, proc: Process, seccomp: Mapping[str, Any] | None,
                 memory_policy: MemoryPolicy | None = None, network: str | None = None) -> None:
        self.proc = proc
        self.seccomp = seccomp
        self.memory_policy = memory_policy
        self.network = network  # see runwasm.linux.task_net.enter_network
        self.filter: Any = None
        self._sets: tuple[int, int, int] | None = None  # the guest's (E, P, I) still to be set

    def _needs(self, runtime: tuple[SyscallNeed, ...]) -> list[str]:
        assert self.seccomp is not None
        drops_later = not self.proc.no_new_privileges and (self.proc.capabilities is not None or self.proc.user.uid != 0)
        return seccomp_step.unmet(self.seccomp, [*runtime, *((CAPSET_NEED,) if drops_later else ())])

    def check(self) -> None:
        if self.seccomp is None:
            return
        self.filter = seccomp_step.compile_filter(self.seccomp)
        missing = self._needs(RUNTIME_SYSCALLS)
        if missing:
            raise InvalidArgumentError(
                "linux.seccomp would break the Wasm runtime: it is loaded right before guest code "
                f"and wasmtime still needs {', '.join(missing)}; allow them in the profile")

    @contextlib.contextmanager
    def as_guest(self) -> Iterator[None]:
        user = self.proc.user
        if os.geteuid() != 0 and (os.geteuid(), os.getegid()) == (user.uid, user.gid):
            yield  # an unprivileged server already is the user; nothing it could switch
            return
        groups, egid = os.getgroups(), os.getegid()
        try:
            os.setgroups(list(user.additional_gids))
            os.setresgid(-1, user.gid, -1)
            os.setresuid(-1, user.uid, -1)
            if self.proc.capabilities is not None:  # the checks use the spec's effective set
                _eff, perm, inh = sc.capget()
                sc.capset(capabilities.mask_of(self.proc.capabilities.effective, "effective") & perm, perm, inh)
        except OSError as err:
            self._restore(groups, egid)
            raise SetupError(f"failed to take uid={user.uid} gid={user.gid} additionalGids="
                             f"{list(user.additional_gids)} to open the module: [errno {err.errno}] {err.strerror}") from err
        try:
            yield
        finally:
            self._restore(groups, egid)

    @staticmethod
    def _restore(groups: list[int], egid: int) -> None:
        os.setresuid(-1, 0, -1)  # the saved uid is still 0
        _eff, perm, inh = sc.capget()
        sc.capset(perm, perm, inh)  # effective = permitted again (also when the user is root)
        os.setresgid(-1, egid, -1)
        os.setgroups(groups)

    def drop(self) -> None:
        proc = self.proc
        limits.set_rlimits(proc.rlimits)
        limits.set_oom_score_adj(proc.oom_score_adj)
        sched.set_scheduler(proc.scheduler)
        sched.set_io_priority(proc.io_priority)
        sched.set_memory_policy(self.memory_policy)
        if proc.capabilities is not None:
            capabilities.drop_bounding(proc.capabilities)
        capabilities.keep_caps()
        identity.switch(proc.user, in_user_ns=False)
        sets = after_exec_sets(proc)
        hold = self.filter is not None and not proc.no_new_privileges
        if sets is not None:
            admin = 1 << CAP_SYS_ADMIN if hold else 0
            self._capset(sets[0] | admin, sets[1] | admin, sets[2])
            if proc.capabilities is not None:
                capabilities.raise_ambient(proc.capabilities)
            self._sets = sets if hold else None
        sc.prctl(sc.PR_SET_KEEPCAPS, 0)
        if proc.no_new_privileges:
            try:
                sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
            except OSError as err:
                raise SetupError(f"failed to set no_new_privs: [errno {err.errno}] {err.strerror}") from err

    @staticmethod
    def _capset(eff: int, perm: int, inh: int) -> None:
        try:
            sc.capset(eff, perm, inh)
        except OSError as err:
            raise SetupError(f"failed to set capabilities (effective={eff:#x} permitted={perm:#x} "
                             f"inheritable={inh:#x}): [errno {err.errno}] {err.strerror}") from err

    def before_guest(self) -> None:
        if self.filter is not None:
            seccomp_step.load(self.filter)
        if self._sets is not None:
            self._capset(*self._sets)

    def readonly_dir(self, fd: int, where: str) -> int:
        return task_net.readonly_clone(fd, where)

    def enter_network(self) -> None:
        task_net.enter_network(self.network)

    def unmet_exec(self) -> list[str]:
        """The syscalls a wasmtime CLI exec'd after the filter needs and it would deny."""
        return [] if self.seccomp is None else self._needs(EXEC_SYSCALLS)


def zygote_warm() -> None:
    """Fill, once in the zygote, the per-process caches every Wasm workload consults (the zygote
    calls a preloaded module's ``zygote_warm``): the engine identity of the compile cache's keys
    (wasmtime's version and native library: a directory walk; the CPU's flags from
    /proc/cpuinfo) and where the wasmtime CLIs are installed (the import system's search). Each
    forked workload did all of it again: ~5 ms of CPU per task."""
    from runwasm.wasm.http_serve import cli_package_dir
    from runwasm.wasm.identity import cpu_fingerprint, wasmtime_version

    wasmtime_version()
    cpu_fingerprint()
    cli_package_dir()


def join_cgroup(procs_files: Sequence[str]) -> None:
    """Move this process into its task's cgroup (one ``cgroup.procs`` file per hierarchy), before
    anything else: the payload's ``cgroup_procs`` (``WasmBackend._joining``). SetupError when
    the kernel refuses, naming the file. The workload has one thread here, so it joins through
    each hierarchy's ``tasks`` file (``runwasm.linux.cgroup_join.self_join_file``: no wait for the
    kernel's threadgroup lock)."""
    for procs in procs_files:
        path = self_join_file(procs)
        try:
            with open(path, "w") as f:
                f.write("0")
        except OSError as err:
            raise SetupError(f"failed to join cgroup: writing to {path!r}: [errno {err.errno}] {err.strerror}") from err


def main(payload: dict[str, Any], fds: dict[str, int]) -> NoReturn:
    """Parse the confinement part of the payload, then hand over to ``runwasm.wasm.child.main``."""
    from runwasm.oci.control import report_error
    from runwasm.wasm import child

    try:
        join_cgroup(payload.get("cgroup_procs") or ())
        proc = parse_process(payload["process"], source="<wasm payload>")
        seccomp = payload.get("seccomp")
        if seccomp is not None and not isinstance(seccomp, Mapping):
            raise InvalidArgumentError(f"invalid wasm payload: seccomp must be an object, got {seccomp!r}")
        memory_policy = parse_memory_policy(SpecReader("<wasm payload>"), payload.get("memoryPolicy"),
                                            "linux.memoryPolicy")
        network = payload.get("network")
        if network is not None and not isinstance(network, str):
            raise InvalidArgumentError(f"invalid wasm payload: network must be a string or null, got {network!r}")
        confinement = LinuxConfinement(proc, seccomp, memory_policy, network)
        task = payload["task"]
    except Exception as err:  # noqa: BLE001 - reported like any set-up error
        report_error(fds["control"], err if isinstance(getattr(err, "status", None), str)
                     else SetupError(f"invalid wasm payload: {type(err).__name__}: {err}"))
        os._exit(1)
    child.main(task, fds, confinement)
