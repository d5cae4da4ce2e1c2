"""How a Wasm workload takes on the container's credentials: the hook points, and what the
runtime itself still needs from the kernel once the spec's seccomp filter is in place.

Stdlib only. ``runwasm.wasm`` does not know how credentials are applied (that is kernel work in
``runwasm.linux``, which this package may not import); ``prepare`` and ``child.main`` call a
``Confinement`` at fixed points, and the shim's Wasm entry (``runwasm.shim.spawn.wasm_workload``)
passes one that applies ``process.user``, capabilities, rlimits, oomScoreAdj,
noNewPrivileges and ``linux.seccomp``. The points, in order:

1. ``check()``: first thing, nothing opened yet. Validate what can be validated (compile the
   seccomp filter, check it leaves the runtime the syscalls of ``RUNTIME_SYSCALLS``); errors
   fail Create.
2. The rootfs, the cwd and the bind-mount sources are opened as directory handles with the
   server's credentials (runc mounts them as root too: what the container sees at ``/`` does
   not depend on the host directories above the bundle).
3. ``as_guest()``: a context in which file-system access is checked as the container's user
   (uid, gid, additional gids, effective capabilities), reversibly: the module file is opened
   inside it, relative to the rootfs handle.
4. The module is read and compiled through the compile cache (runwasm's own files, server
   credentials); the WASI preopens are made from the handles.
5. ``drop()``: for good: rlimits, oomScoreAdj, bounding set, user and groups, umask,
   capability sets, ambient, noNewPrivileges. From here every file the guest opens, through
   the preopens, is reached with the container's credentials.
6. ``before_guest()``: after ``start``, right before guest code: the seccomp filter is loaded
   (as late as possible, so it constrains the guest and as little of the runtime as can be).

A task the wasmtime CLI runs (``wasmtime-min``: ``runwasm.wasm.min_run``; a ``wasi:http/proxy``
component: ``runwasm.wasm.http_serve``; a networked command: ``runwasm.wasm.cli_run``) also
uses, between 4 and 5: ``unmet_exec()`` (the syscalls of ``EXEC_SYSCALLS`` the seccomp filter
would deny: the filter is loaded before the exec), ``readonly_dir(fd, where)`` (a read-only view
of a directory handle, for read-only preopens: a new fd) and, for the networked ones,
``enter_network()`` (the spec's network namespace).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

THREAD_CLONE_FLAGS = 0x3D0F00
"""clone(2) flags glibc's pthread_create uses: VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|
PARENT_SETTID|CHILD_CLEARTID (what seccomp profiles' conditional ``clone`` rules test)."""


@dataclass(frozen=True, slots=True)
class SyscallNeed:
    """A syscall the runtime makes after the filter is loaded and cannot do without.

    args: argument values runwasm passes (index -> value), to evaluate conditional rules.
    enosys_fallback: what the caller tries instead when this one fails with ENOSYS
        (glibc falls back from clone3 to clone), so a profile answering ENOSYS is fine if the
        fallback is allowed.
    """

    name: str
    args: Mapping[int, int] = field(default_factory=dict)
    enosys_fallback: SyscallNeed | None = None


RUNTIME_SYSCALLS: tuple[SyscallNeed, ...] = (
    # memory: wasmtime maps linear memories, code and guard pages; the allocator
    *(SyscallNeed(n) for n in ("mmap", "munmap", "mprotect", "madvise", "mremap", "brk")),
    # traps are signals (SIGSEGV/SIGILL on guard pages) handled on an alternate stack
    *(SyscallNeed(n) for n in ("rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack")),
    # WASI runs on a tokio runtime: worker threads, an epoll reactor woken by an eventfd
    SyscallNeed("clone3", enosys_fallback=SyscallNeed("clone", {0: THREAD_CLONE_FLAGS})),
    *(SyscallNeed(n) for n in ("futex", "epoll_create1", "epoll_ctl", "epoll_wait", "eventfd2", "fcntl")),
    # stdio, the trap report, and leaving
    *(SyscallNeed(n) for n in ("read", "write", "close", "getpid", "exit", "exit_group")),
)
"""Measured with ``strace -f`` over hello, trap and file-reading modules from the seccomp load
point to exit (x86_64, wasmtime-py 4x); syscalls whose failure the runtime tolerates (rseq,
set_robust_list, statx, getrandom, sched_getaffinity, ioctl TCGETS, openat2) are left out."""

EXEC_SYSCALLS: tuple[SyscallNeed, ...] = (
    *RUNTIME_SYSCALLS,
    # the exec itself (fexecve of the CLI's O_PATH handle: execveat, glibc falls back to execve of
    # /proc/self/fd/N on ENOSYS), then the dynamic loader and Rust's start-up in wasmtime(-min):
    # TLS, the shared libraries (libgcc_s, libc, libm), the artifact and directories opened by path
    SyscallNeed("execveat", enosys_fallback=SyscallNeed("execve")),
    *(SyscallNeed(n) for n in ("arch_prctl", "openat", "newfstatat", "pread64")),
    # tokio's signal pipe (a socketpair) and its blocking poll
    *(SyscallNeed(n) for n in ("socketpair", "poll")),
)
"""What a task that execs the wasmtime CLI after the filter (``wasmtime-min run``, ``wasmtime
serve``/``run``) needs: measured by making each syscall ``strace -f -c`` saw over hello, trap
and file-reading modules under ``wasmtime-min`` 49 fail with EPERM in turn and keeping those
whose failure broke the run (access, brk, getrandom, gettid, ioctl, lseek, prctl, prlimit64,
rseq, sched_getaffinity, set_robust_list, set_tid_address, statx are tolerated)."""

CAPSET_NEED = SyscallNeed("capset")
"""Needed too when the spec does not set noNewPrivileges: loading a filter then takes
CAP_SYS_ADMIN, which the workload keeps until the filter is in and drops with capset after."""


class Confinement(Protocol):
    def check(self) -> None: ...
    def as_guest(self) -> contextlib.AbstractContextManager[None]: ...
    def drop(self) -> None: ...
    def before_guest(self) -> None: ...
    def readonly_dir(self, fd: int, where: str) -> int: ...
    def enter_network(self) -> None: ...
    def unmet_exec(self) -> list[str]: ...


class NoConfinement:
    """Runs with the workload's own credentials (unit tests, and callers that confine otherwise)."""

    def check(self) -> None:
        return None

    @contextlib.contextmanager
    def as_guest(self) -> Iterator[None]:
        yield

    def drop(self) -> None:
        return None

    def before_guest(self) -> None:
        return None

    def readonly_dir(self, fd: int, where: str) -> int:
        from runwasm.wasm.errors import WasiSetupError

        raise WasiSetupError(f"cannot preopen {where!r} read-only for the wasmtime CLI without the shim's "
                             "confinement (it makes the read-only mount view)")

    def enter_network(self) -> None:
        return None

    def unmet_exec(self) -> list[str]:
        return []
