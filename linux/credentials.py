"""The process-level steps init and exec share, in their required order:

rlimits and oom_score_adj (need CAP_SYS_RESOURCE), scheduler and I/O priority (CAP_SYS_NICE for
real-time ones) -> cwd (as root, like runc: the target user
may lack search permission on the path to it, and chdir is re-done after the switch) ->
bounding set drop (needs CAP_SETPCAP) -> seccomp here if there is no noNewPrivileges (loading
then needs CAP_SYS_ADMIN, which the next steps drop) -> KEEPCAPS + user/group switch ->
capset -> ambient -> noNewPrivileges. With noNewPrivileges seccomp waits for ``finish``,
right before execve.
"""

from __future__ import annotations

import os
from typing import Any

from runwasm.linux import capabilities, identity, limits, process, sched
from runwasm.linux import seccomp as seccomp_step
from runwasm.linux import syscalls as sc
from runwasm.linux.errors import SetupError
from runwasm.oci.runtime_spec import Process


def apply(proc: Process, seccomp_filter: Any | None, *, in_user_ns: bool) -> bool:
    """Apply everything up to (not including) the late seccomp load; returns True when seccomp
    is still to be loaded by ``finish``."""
    limits.set_rlimits(proc.rlimits)
    limits.set_oom_score_adj(proc.oom_score_adj)
    sched.set_scheduler(proc.scheduler)
    sched.set_io_priority(proc.io_priority)
    process.chdir(proc.cwd)
    if proc.capabilities is not None:
        capabilities.drop_bounding(proc.capabilities)
    late = seccomp_filter is not None and proc.no_new_privileges
    if seccomp_filter is not None and not late:
        seccomp_step.load(seccomp_filter)
    capabilities.keep_caps()
    identity.switch(proc.user, in_user_ns=in_user_ns)
    if proc.capabilities is not None:
        capabilities.set_sets(proc.capabilities)
        capabilities.raise_ambient(proc.capabilities)
    else:
        sc.capset(0, 0, 0) if proc.user.uid != 0 else None
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    process.chdir(proc.cwd)
    if proc.no_new_privileges:
        try:
            sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
        except OSError as err:
            raise SetupError(f"failed to set no_new_privs: [errno {err.errno}] {err.strerror}") from err
    return late


def close_extra_fds() -> None:
    """Close every fd above 2 (the control socket, the log fd, leftovers) before execve."""
    os.closerange(3, 65536)
