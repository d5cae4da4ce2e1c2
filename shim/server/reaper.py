"""Reap every child of the server (it is a child subreaper) and hand exits to their owners.

On SIGCHLD the loop calls ``reap()``, which collects every exited child. A process is known by
its identity, ``(pid, start_time)`` (field 22 of ``/proc/<pid>/stat``), never by its pid alone:
pids wrap (pid_max may be 32768), so an exit must not be handed to a later process that got the
same number. ``reap()`` peeks at each exited child with ``waitid(WNOWAIT)``, reads the start
time of the zombie, then reaps it.

- An exit of a watched identity is delivered to its callback.
- An exit nobody watches is kept only while a spawn is in flight (``spawning()``): the workload
  being spawned may die before the zygote's reply reaches the server, and is watched as soon
  as the reply arrives. Such exits are matched by identity, so another process's exit is never
  handed on; they are forgotten when the next spawn begins.
- Any other unwatched exit (an orphan re-parented to the server, e.g. a child that outlived a
  container's init in a container without a pid namespace) is dropped.

The status is the shell convention: the exit code, or 128+signal for a signalled process.

Rule: the server never runs ``subprocess`` (its own waitpid would race this reaper); extra
processes are spawned through the zygote.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from runwasm.shim.common.statefile import process_start_time

log = logging.getLogger(__name__)

ExitCallback = Callable[[int, int, int], None]  # (pid, status, exited_at_ns)

MAX_UNCLAIMED = 1024
"""Exits kept for spawns in flight; beyond it the oldest are dropped (they are orphans)."""


def exit_status(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


class Reaper:
    def __init__(self) -> None:
        self._watch: dict[int, tuple[int, ExitCallback]] = {}
        self._unclaimed: dict[tuple[int, int], tuple[int, int]] = {}
        self._spawning = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGCHLD, self.reap)

    @property
    def unclaimed(self) -> int:
        """Number of exits kept for a spawn in flight (for tests and diagnostics)."""
        return len(self._unclaimed)

    @contextmanager
    def spawning(self) -> Iterator[None]:
        """Wrap the creation of a process that will be ``watch``-ed: exits reaped meanwhile are
        kept for it. Call ``watch`` right after the block, before yielding to the loop."""
        if self._spawning == 0:
            self._unclaimed.clear()  # kept for earlier spawns, which have all been watched since
        self._spawning += 1
        try:
            yield
        finally:
            self._spawning -= 1

    def watch(self, pid: int, start_time: int, callback: ExitCallback) -> None:
        """Call ``callback(pid, status, exited_at_ns)`` once the process ``(pid, start_time)``
        exits (maybe right away). ``start_time`` is what ``/proc/<pid>/stat`` said while the
        process was known to be that one (the zygote reports it)."""
        kept = self._unclaimed.pop((pid, start_time), None)
        if kept is not None:
            callback(pid, *kept)
            return
        self._watch[pid] = (start_time, callback)
        self.reap()  # the exit may have happened before the watch; collect it now

    def reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            start_time = process_start_time(pid)  # the zombie keeps its /proc entry until reaped
            try:
                reaped, wstatus = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if reaped == 0:  # cannot happen for a zombie waitid reported; do not spin on it
                return
            self._deliver(pid, start_time, exit_status(wstatus), time.time_ns())

    def _deliver(self, pid: int, start_time: int, status: int, when: int) -> None:
        watched = self._watch.get(pid)
        if watched is not None and watched[0] == start_time:
            del self._watch[pid]
            try:
                watched[1](pid, status, when)
            except Exception:
                log.exception("exit handler for pid %d failed", pid)
        elif self._spawning:
            self._unclaimed[(pid, start_time)] = (status, when)
            if len(self._unclaimed) > MAX_UNCLAIMED:
                self._unclaimed.pop(next(iter(self._unclaimed)))
        else:
            log.debug("dropped the exit status %d of pid %d, which nobody watches", status, pid)
