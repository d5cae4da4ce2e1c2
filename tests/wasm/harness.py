"""Play the shim's side of the control protocol against a real ``runwasm.wasm.child`` process.

The workload runs in a fresh interpreter (``python -c``) that calls ``child.main`` with fds
passed through ``pass_fds``, the way the zygote hands them over (without the zygote itself).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from runwasm.oci import control

HELPER = (
    "import json, sys\n"
    "from runwasm.wasm.child import main\n"
    "main(json.loads(sys.argv[1]), {k: int(v) for k, v in json.loads(sys.argv[2]).items()})\n"
)


class _Reader(threading.Thread):
    """Collect everything read from an fd until EOF."""

    def __init__(self, fd: int, delay: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.delay = delay
        self.chunks: list[bytes] = []
        self.start()

    def run(self) -> None:
        time.sleep(self.delay)
        try:
            while chunk := os.read(self.fd, 65536):
                self.chunks.append(chunk)
        finally:
            os.close(self.fd)

    def text(self, timeout: float = 30) -> str:
        self.join(timeout)
        return b"".join(self.chunks).decode(errors="replace")

    def peek(self) -> bytes:
        return b"".join(self.chunks)


@dataclass
class Child:
    """A spawned workload plus the shim ends of its fds."""

    proc: subprocess.Popen[bytes]
    ctl: socket.socket
    stdout: _Reader
    stderr: _Reader
    log: _Reader | None
    stdin_w: int | None
    outcome: dict[str, Any] = field(default_factory=dict)

    def handshake(self, timeout: float = 60) -> dict[str, Any]:
        """The workload's ready/error message."""
        self.ctl.settimeout(timeout)
        msg: dict[str, Any] = control.recv(self.ctl)
        return msg

    def start(self) -> None:
        control.send(self.ctl, {"type": "start"})

    def abort(self) -> None:
        self.ctl.close()

    def write_stdin(self, data: bytes) -> None:
        assert self.stdin_w is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self.stdin_w, view) :]
        os.close(self.stdin_w)
        self.stdin_w = None

    def wait_output(self, needle: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.stdout.peek():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"no {needle!r} on stdout, got {self.stdout.peek()!r}")
            time.sleep(0.01)

    def finish(self, timeout: float = 60) -> tuple[int, str, str, str]:
        """(returncode, guest stdout, guest stderr, log) once the process has exited."""
        if self.stdin_w is not None:
            os.close(self.stdin_w)
            self.stdin_w = None
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.ctl.close()
        assert self.proc.stdout is not None
        self.outcome["helper_stdout"] = self.proc.stdout.read().decode()
        assert self.proc.stderr is not None
        self.outcome["helper_stderr"] = self.proc.stderr.read().decode()
        self.proc.stdout.close()
        self.proc.stderr.close()
        log = self.log.text() if self.log is not None else ""
        return rc, self.stdout.text(), self.stderr.text(), log

    def kill(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)


def spawn(payload: dict[str, Any], *, stdin: bool = False, log: bool = True, stdout_nonblock: bool = False,
          stdout_delay: float = 0.0) -> Child:
    """Start ``child.main(payload, fds)`` with control, stdout, stderr, optional stdin and log.

    ``stdout_nonblock`` sets O_NONBLOCK on the stdout pipe's write end (as a FIFO opened
    non-blocking would be); ``stdout_delay`` makes the reader wait before draining stdout.
    """
    shim_end, wl_end = control.socketpair()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    if stdout_nonblock:
        os.set_blocking(out_w, False)
    fds = {"control": wl_end.fileno(), "stdout": out_w, "stderr": err_w}
    log_r = stdin_w = None
    if log:
        log_r, log_w = os.pipe()
        fds["log"] = log_w
    if stdin:
        in_r, stdin_w = os.pipe()
        fds["stdin"] = in_r
    proc = subprocess.Popen(
        [sys.executable, "-c", HELPER, json.dumps(payload), json.dumps(fds)],
        pass_fds=list(fds.values()),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wl_end.close()
    for name, fd in fds.items():
        if name != "control":
            os.close(fd)
    return Child(
        proc, shim_end, _Reader(out_r, stdout_delay), _Reader(err_r), _Reader(log_r) if log_r is not None else None, stdin_w
    )


def run(payload: dict[str, Any], **kw: Any) -> tuple[int, str, str, str]:
    """Spawn, expect ready, start, and wait for the exit."""
    child = spawn(payload, **kw)
    msg = child.handshake()
    assert msg["type"] == "ready", (msg, child.finish())
    child.start()
    return child.finish()
