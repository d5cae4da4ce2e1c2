"""Reap every child of the server (it is a child subreaper) and hand exits to their owners.

On SIGCHLD the loop calls ``reap()``, which collects every exited child with
``waitpid(-1, WNOHANG)``. An exit for a pid somebody ``watch``-es is delivered to that
callback; an exit for a pid not yet watched (a workload can die before the zygote's reply
reaches the server) is kept and delivered as soon as it is watched. The status is the
shell convention: the exit code, or 128+signal for a signalled process.

Rule: the server never runs ``subprocess`` (its own waitpid would race this reaper); extra
processes are spawned through the zygote.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

ExitCallback = Callable[[int, int, int], None]  # (pid, status, exited_at_ns)


def exit_status(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


class Reaper:
    def __init__(self) -> None:
        self._watch: dict[int, ExitCallback] = {}
        self._unclaimed: dict[int, tuple[int, int]] = {}

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGCHLD, self.reap)

    def watch(self, pid: int, callback: ExitCallback) -> None:
        """Call ``callback(pid, status, exited_at_ns)`` once ``pid`` exits (maybe right away)."""
        if pid in self._unclaimed:
            status, when = self._unclaimed.pop(pid)
            callback(pid, status, when)
        else:
            self._watch[pid] = callback
            self.reap()  # the exit may have happened before the watch; collect it now

    def reap(self) -> None:
        while True:
            try:
                pid, wstatus = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            status, when = exit_status(wstatus), time.time_ns()
            cb = self._watch.pop(pid, None)
            if cb is None:
                self._unclaimed[pid] = (status, when)
                if len(self._unclaimed) > 4096:  # orphans nobody will claim: keep the newest
                    self._unclaimed.pop(next(iter(self._unclaimed)))
                continue
            try:
                cb(pid, status, when)
            except Exception:
                log.exception("exit handler for pid %d failed", pid)
