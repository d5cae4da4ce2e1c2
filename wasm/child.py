"""Wasm task workload body: ``main`` runs in the process the zygote forks (entered through
``runwasm.shim.spawn.wasm_workload:main``, which supplies the credential steps).

Contract (see docs/contributing.md, "Process model"):
- ``payload`` is ``WasmTaskPayload.to_json()``; ``fds`` maps names to open fds: ``control``
  (required), ``stdin``/``stdout``/``stderr`` (optional), ``log`` (optional).
- Set-up (``runwasm.wasm.task.prepare``) runs first. On failure the error's class name and
  message go to the shim with ``report_error`` and the process exits 1; otherwise ``ready``
  is sent and the process blocks in ``wait_start`` (EOF there: exit 1, nothing run).
- After ``start``: the named stdio fds are dup2'd onto 0/1/2, ``O_NONBLOCK`` is cleared on
  them (guests expect blocking stdio; so the shim must hand over open file descriptions of
  its own, not ones it drives with asyncio), and the guest runs. The process exits with the
  status ``task.run`` returns (0, the guest's exit code, or 134 after a trap, reported on the
  task's stderr as the wasmtime CLI does). Never returns.
- A ``wasi:http/proxy`` component (``task.serve``): ``ready`` carries ``stop_signal`` (SIGINT:
  the shim sends it for SIGTERM, what ``wasmtime serve`` drains on), and after ``start`` the
  process execs ``wasmtime serve`` (``runwasm.wasm.http_serve``) with the stdio installed and
  the confinement complete; if the exec fails, the reason goes to the task's stderr, status 127.
  A command component with ``WasmNetwork = true`` does the same with ``wasmtime run``
  (``runwasm.wasm.cli_run``), SIGTERM delivered as is; so does every task the CLI can express
  (``runwasm.wasm.min_run``): a core module under ``wasmtime-min run``, a command component
  under ``wasmtime run``; what it cannot express runs in this process (``task.run``).
- Fds 0/1/2 that are not open at entry are opened on /dev/null first, so no file opened
  during set-up can land on them and the guest's unassigned stdio is /dev/null.
- Diagnostics (logging, trap reports) go to ``fds["log"]`` if present, else to the process's
  original fd 2 if it was open at entry, else to the task's stderr once it is installed.
"""

from __future__ import annotations

import fcntl
import logging
import os
from typing import Any, NoReturn

from runwasm.oci.control import ControlChannelError, report_error, report_ready, wait_start
from runwasm.wasm.confine import Confinement
from runwasm.wasm.errors import WasmError

log = logging.getLogger(__name__)

STDIO = (("stdin", 0), ("stdout", 1), ("stderr", 2))


class _FdStream:
    """A minimal text stream writing straight to an fd (no buffering to lose at ``os._exit``)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def write(self, text: str) -> int:
        if self.fd is not None:
            data = text.encode("utf-8", "replace")
            try:
                while data:
                    data = data[os.write(self.fd, data) :]
            except OSError:
                pass  # the log reader is gone; there is nowhere left to report this
        return len(text)

    def flush(self) -> None:
        pass


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _setup_diagnostics(fds: dict[str, int]) -> _FdStream:
    """Fill closed 0/1/2 with /dev/null and route logging; see module doc."""
    original_stderr = os.dup(2) if _fd_open(2) else None
    for fd in (0, 1, 2):
        if not _fd_open(fd):
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    target = fds.get("log", original_stderr)
    if target != original_stderr and original_stderr is not None:
        os.close(original_stderr)
    stream = _FdStream(target)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return stream


def _install_stdio(fds: dict[str, int]) -> None:
    for name, target in STDIO:
        fd = fds.get(name)
        if fd is None:
            continue
        if fd != target:
            os.dup2(fd, target)
            os.close(fd)
        flags = fcntl.fcntl(target, fcntl.F_GETFL)
        if flags & os.O_NONBLOCK:
            fcntl.fcntl(target, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)


def _exit(code: int) -> NoReturn:
    logging.shutdown()
    os._exit(code)


EXIT_CONFINE_FAILED = 127
"""Exit status when the last confinement step (loading seccomp) fails after ``start``: like
the Linux executor when execve cannot happen; the reason goes to the task's stderr."""


def main(payload: dict[str, Any], fds: dict[str, int], confinement: Confinement | None = None) -> NoReturn:
    """Set up, report ready, wait for start, run the guest, exit with its status.

    ``confinement`` (see ``runwasm.wasm.confine``) is applied during set-up and right before
    guest code; without it the guest runs with the workload's own credentials."""
    try:
        control = fds["control"]
    except KeyError:
        os._exit(1)
    stream = _setup_diagnostics(fds)
    try:
        # Imported here so that a bad payload is still reported if wasmtime fails to import.
        from runwasm.wasm.fast_min import prepare_fast
        from runwasm.wasm.payload import WasmTaskPayload

        task_payload = WasmTaskPayload.from_json(payload)
        serve = prepare_fast(task_payload, confinement)  # a cached verdict: no wasmtime-py at all
        task = None
        if serve is None:
            from runwasm.wasm.task import prepare

            task = prepare(task_payload, confinement)
            serve = task.serve
    except WasmError as err:
        log.error("%s", err)
        report_error(control, err)
        _exit(1)
    except Exception as err:
        if isinstance(getattr(err, "status", None), str):  # a classified error of the confinement
            log.error("%s", err)
            report_error(control, err)
            _exit(1)
        # a bug, or a failure outside the classified cases
        log.exception("failed to set up wasm task")
        report_error(control, WasmError(f"failed to set up wasm task: {type(err).__name__}: {err}"))
        _exit(1)
    try:
        report_ready(control, stop_signal=serve.stop_signal if serve is not None else None)
    except (ControlChannelError, OSError) as err:
        log.error("failed to report ready: %s", err)
        _exit(1)
    wait_start(control)
    _install_stdio(fds)
    if stream.fd is None and "stderr" in fds:
        stream.fd = 2
    if confinement is not None:
        try:
            confinement.before_guest()
        except Exception as err:  # noqa: BLE001 - nothing ran yet; say why on the task's stderr
            log.error("failed to confine wasm task: %s", err)
            _FdStream(2).write(f"runwasm: failed to confine the wasm task: {err}\n")
            _exit(EXIT_CONFINE_FAILED)
    if serve is not None:  # wasi:http/proxy (serve) or WasmNetwork (run): the wasmtime CLI runs it
        from runwasm.wasm.http_serve import exec_serve

        try:
            exec_serve(serve)
        except OSError as err:
            log.error("failed to exec wasmtime %s: %s", serve.argv[0], err)
            _FdStream(2).write(f"runwasm: failed to exec wasmtime {serve.argv[0]} for {serve.where!r}: {err}\n")
            _exit(EXIT_CONFINE_FAILED)
    from runwasm.wasm.task import run

    assert task is not None
    # the task's stderr gets the trap report unless the log already goes there
    _exit(run(task, report_fd=2 if "stderr" in fds and stream.fd != 2 else None))
