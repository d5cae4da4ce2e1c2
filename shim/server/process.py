"""One workload process (a container's init or an exec) as the server sees it.

A ``Proc`` is created when the zygote returns the workload's pid, holds the server's end of the
control channel until Start, and records the exit the reaper delivers. ``exited`` is set once;
waiters await it. Exit times are nanoseconds since the epoch; ``exited_at_ns`` is None until
the process exits (the RPC layer sends Go's zero time then).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runwasm.oci import control
from runwasm.shim.common.errors import STATUS_CODES, ShimError, UnavailableError
from runwasm.shim.server.state import Op, State, transition
from runwasm.shim.server.stdio import StdioPaths

READY_TIMEOUT = 300.0  # a large module may take a while to compile on the first run


class WorkloadSetupError(ShimError):
    """The workload reported a set-up failure; ``status`` comes from the reported error kind."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


def _status_for_kind(kind: str) -> str:
    from runwasm.wasm.errors import STATUS_BY_KIND

    if kind in STATUS_BY_KIND:
        return STATUS_BY_KIND[kind]
    try:
        from runwasm.linux import errors as linux_errors

        cls = getattr(linux_errors, kind, None)
        status = getattr(cls, "status", None)
        if isinstance(status, str):
            return status
    except ImportError:
        pass
    if kind == "SpecError":
        return "invalid_argument"
    return "unknown"


def msg_has_pty(data: bytes) -> bool:
    try:
        return bool(json.loads(data).get("pty"))
    except (ValueError, AttributeError):
        return False


@dataclass(slots=True)
class Proc:
    """A task's process (its init or an exec) as the Task service tracks it."""

    container_id: str
    exec_id: str
    pid: int
    stdio: StdioPaths
    control: socket.socket | None
    start_time: int = 0  # field 22 of /proc/<pid>/stat: with the pid, the process's identity
    state: State = State.CREATED
    exit_status: int = 0
    exited_at_ns: int | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    pty: int | None = None  # pty master sent by the workload with its ready (terminal=true)
    console: Any = None  # runwasm.shim.server.console.Console once the pty is being copied
    announced: bool = False  # TaskCreate/TaskExecAdded published: exits are published too
    _watched_fd: int = -1
    _on_executed: Callable[[], None] | None = None
    _awaiting_ready: bool = True  # wait_ready has not read the workload's first word yet
    stop_signal: int | None = None  # sent instead of SIGTERM (a wasi:http server drains on SIGINT)

    @property
    def what(self) -> str:
        return f"container {self.container_id!r}" + (f" exec {self.exec_id!r}" if self.exec_id else "")

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:  # noqa: ASYNC109
        """Wait for the workload's ``ready``; raise WorkloadSetupError/UnavailableError otherwise."""
        if self.control is None:  # closed by an abort: no word will come
            raise UnavailableError(f"{self.what}: workload exited during set-up with status {self.exit_status}")
        try:
            await self._read_ready(self.control, timeout)
        finally:
            self._awaiting_ready = False
            if self.exited.is_set():  # on_exit() left the channel open for us to read its last words
                self.close_control()

    async def _read_ready(self, control_sock: socket.socket, timeout: float) -> None:  # noqa: ASYNC109
        # our own reference, so that nothing closing self.control meanwhile pulls the fd away
        sock = control_sock.dup()
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def on_readable() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(sock.fileno(), on_readable)
        try:
            async with asyncio.timeout(timeout):  # not wait_for: no inner future and extra loop turn
                await readable
            data, fds, _flags, _addr = socket.recv_fds(sock, control.MAX_PACKET, 4)
        except TimeoutError as err:
            raise UnavailableError(f"{self.what}: workload set-up did not finish within {timeout:.0f}s") from err
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()
        if fds and msg_has_pty(data):
            self.pty = fds.pop(0)
        for fd in fds:
            os.close(fd)
        try:
            msg = control.decode(data)
        except control.ControlChannelError as err:
            if self.exited.is_set():
                raise UnavailableError(f"{self.what}: workload exited during set-up with status "
                                       f"{self.exit_status}") from err
            raise UnavailableError(f"{self.what}: workload exited during set-up ({err})") from err
        if msg["type"] == "error":
            status = msg.get("status")
            if not isinstance(status, str) or status not in STATUS_CODES:
                status = _status_for_kind(str(msg.get("kind", "")))  # a workload that sent no status
            raise WorkloadSetupError(f"{self.what}: {msg.get('message', 'set-up failed')}", status)
        if msg["type"] != "ready":
            raise UnavailableError(f"{self.what}: unexpected control message {json.dumps(msg)[:100]}")
        stop = msg.get("stop_signal")
        if stop is not None:
            if not isinstance(stop, int) or isinstance(stop, bool) or not 1 <= stop <= 64:
                raise UnavailableError(f"{self.what}: invalid stop_signal {stop!r} in the workload's ready")
            self.stop_signal = stop

    def signal_for(self, sig: int) -> int:
        """The signal to deliver when ``sig`` is asked for: ``stop_signal`` instead of SIGTERM."""
        return self.stop_signal if sig == signal.SIGTERM and self.stop_signal is not None else sig

    def send_start(self, on_executed: Callable[[], None] | None = None) -> None:
        """Tell the workload to run user code.

        Without ``on_executed`` the control channel is dropped at once. With it, the channel is
        kept until the workload closes its end (a Linux workload's control fd is close-on-exec,
        so that is the moment its user process has been executed) or exits, and then
        ``on_executed`` is called once: that is when poststart hooks run.
        """
        assert self.control is not None
        try:
            control.send(self.control, {"type": "start"})
        except BaseException:
            self.close_control()
            raise
        if on_executed is None:
            self.close_control()
            return
        loop = asyncio.get_running_loop()
        fd = self.control.fileno()

        def readable() -> None:
            try:
                data = self.control.recv(control.MAX_PACKET) if self.control is not None else b""
            except OSError:
                data = b""
            if not data:
                self.close_control()

        loop.add_reader(fd, readable)
        self._watched_fd = fd
        self._on_executed = on_executed

    def close_control(self) -> None:
        """Drop the control channel; a pending ``on_executed`` runs now (exec done, or the
        workload already exited)."""
        if self._watched_fd >= 0:
            asyncio.get_running_loop().remove_reader(self._watched_fd)
            self._watched_fd = -1
        if self.control is not None:
            self.control.close()
            self.control = None
        callback, self._on_executed = self._on_executed, None
        if callback is not None:
            callback()

    def on_exit(self, status: int, when_ns: int) -> bool:
        """Record the exit; returns False if it was already recorded."""
        if self.exited.is_set():
            return False
        self.state = transition(self.state, Op.EXIT, self.what)
        self.exit_status, self.exited_at_ns = status, when_ns
        self.exited.set()
        if not self._awaiting_ready:
            self.close_control()
        # else: a workload that reports a set-up error exits at once, and its exit may be reaped
        # before wait_ready() has read the error: the channel stays open until it has
        return True
