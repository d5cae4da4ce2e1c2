"""The standalone harness: plays containerd's part so the real shim binary runs on a bare machine.

For each ``Harness`` (one private state directory): a ttrpc Events server that records every
forwarded envelope, FIFOs for stdio, a ``log`` FIFO per bundle (held open like containerd
does), and the real ``containerd-shim-runwasm-v1`` executable driven exactly as containerd
drives it: ``start`` with ``BootstrapParams`` on stdin (2.3) or the legacy flags and env, then
Create/Start/Wait/Delete/Shutdown over ttrpc, then ``delete``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import empty_pb2

from runwasm.shim.api.runtime.bootstrap.v1 import bootstrap_pb2
from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
from runwasm.shim.api.services.ttrpc.events.v1 import events_pb2
from runwasm.shim.api.types import event_pb2
from runwasm.shim.ttrpc.client import Client
from runwasm.shim.ttrpc.server import RequestContext, Server

SHIM_BINARY = "containerd-shim-runwasm-v1"
log = logging.getLogger(__name__)
NAMESPACE = "runwasm"


def runtime_options(config_path: str = "", config_body: str = "") -> Any:
    """A ``runtimeoptions.v1.Options`` Any with containerd's bare type URL, as ``ctr
    --runtime-config-path`` or a CRI options table produce it."""
    from google.protobuf import any_pb2

    from runwasm.shim.api.types.runtimeoptions.v1 import api_pb2

    opts = api_pb2.Options(config_path=config_path, config_body=config_body)
    return any_pb2.Any(type_url="runtimeoptions.v1.Options", value=opts.SerializeToString())


def shim_command() -> list[str]:
    """The shim binary next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / SHIM_BINARY
    if beside.exists():
        return [str(beside)]
    found = shutil.which(SHIM_BINARY)
    return [found] if found else [sys.executable, "-m", "runwasm.shim"]


@dataclass
class EventLog:
    envelopes: list[event_pb2.Envelope] = field(default_factory=list)
    metadata: list[dict[str, list[str]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def topics(self, container_id: str | None = None) -> list[str]:
        from runwasm.shim.api.events import task_pb2

        out = []
        for env in self.envelopes:
            if container_id is not None:
                name = env.event.type_url.rsplit(".", 1)[-1]
                msg = getattr(task_pb2, name)()
                msg.ParseFromString(env.event.value)
                if msg.container_id != container_id:
                    continue
            out.append(env.topic)
        return out

    async def wait_for(self, topic: str, container_id: str, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while topic not in self.topics(container_id):
                self.changed.clear()
                await self.changed.wait()


@dataclass
class TaskResult:
    id: str
    pid: int
    exit_status: int


class Harness:
    def __init__(self, *, legacy: bool = False, state_dir: Path | None = None, keep: bool = False) -> None:
        self.legacy = legacy
        self._own_dir = state_dir is None
        self.root = Path(state_dir or tempfile.mkdtemp(prefix="runwasm-harness-", dir="/run"))
        self.keep = keep
        self.events = EventLog()
        self.socket_dir = self.root / "s"
        self.events_sock = self.root / "events.sock"
        self.grpc_address = str(self.root / "containerd.sock")  # only hashed into socket names
        self._server: Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._log_fds: list[int] = []
        self.log_files: list[Path] = []
        # tracing (``runwasm run --trace``, tests): OTEL_*/TRACEPARENT for the shim binary, and the
        # W3C metadata sent on every task RPC, as containerd's otelttrpc interceptor does
        self.shim_env: dict[str, str] = {}
        self.trace_metadata: dict[str, str] = {}
        self.debug = False  # -debug (legacy) or bootstrap log_level DEBUG

    # --- containerd's side -------------------------------------------------------------------

    async def __aenter__(self) -> Harness:
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_events()
        return self

    def start_events(self) -> None:
        """Serve ``Events.Forward`` on ``events_sock`` (containerd's ttrpc socket), recording envelopes."""
        import socket

        with contextlib.suppress(FileNotFoundError):
            self.events_sock.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.events_sock))
        sock.listen(64)

        async def forward(payload: bytes, ctx: RequestContext) -> bytes:
            req = events_pb2.ForwardRequest.FromString(payload)
            self.events.envelopes.append(req.envelope)
            self.events.metadata.append(ctx.metadata)
            self.events.changed.set()
            return b""

        self._server = Server({("containerd.services.events.ttrpc.v1.Events", "Forward"): forward})
        self._listener = sock
        self._serve_task = asyncio.get_running_loop().create_task(self._server.serve(sock))

    async def stop_events(self) -> None:
        """Stop the Events server and remove its socket, as a stopped containerd does.

        The serving task is awaited before the listener is closed: a harness that fails early
        (a bad bundle) stops before that task first ran, and closing the listener under it made
        it die with EBADF ("Task exception was never retrieved")."""
        server, task = self._server, self._serve_task
        if server is not None:
            self._server = self._serve_task = None
            server.close()
            if task is not None:
                try:
                    await task
                except Exception:  # the server's own failure: report it, do not mask the caller's
                    log.exception("harness: the events server failed")
            await server.wait_closed()
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.events_sock.unlink()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_events()
        for fd in self._log_fds:
            os.close(fd)
        if self._own_dir and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def new_bundle(self, container_id: str) -> Path:
        bundle = self.root / "bundles" / container_id
        bundle.mkdir(parents=True)
        return bundle

    def _log_fifo(self, bundle: Path) -> None:
        """containerd creates ``log`` before start and holds it O_RDWR; copy it to a file."""
        path = bundle / "log"
        os.mkfifo(path)
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._log_fds.append(fd)
        out = bundle / "shim.log"
        self.log_files.append(out)
        loop = asyncio.get_running_loop()

        def drain() -> None:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            with open(out, "ab") as f:
                f.write(data)

        loop.add_reader(fd, drain)

    async def shim_start(self, container_id: str, bundle: Path, options: Any = None) -> tuple[str, int]:
        """Run ``shim start`` as containerd would; returns (address, task API version).

        ``options`` (a google.protobuf.Any of runtime options) goes where containerd puts it: a
        bootstrap extension (2.3), or the whole of stdin (legacy)."""
        self._log_fifo(bundle)
        argv = [*shim_command(), "-namespace", NAMESPACE, "-address", self.grpc_address,
                "-publish-binary", "/usr/bin/containerd", "-id", container_id, *(["-debug"] if self.debug else []),
                "start"]
        env = dict(os.environ, TTRPC_ADDRESS=str(self.events_sock), GOMAXPROCS="2", **self.shim_env)
        if self.legacy:
            env["RUNWASM_SOCKET_DIR"] = str(self.socket_dir)
            stdin = options.SerializeToString() if options is not None else b""
        else:
            env.update(GRPC_ADDRESS=self.grpc_address, NAMESPACE=NAMESPACE, MAX_SHIM_VERSION="2")
            stdin = bootstrap_pb2.BootstrapParams(
                instance_id=container_id, namespace=NAMESPACE,
                log_level=bootstrap_pb2.LOG_LEVEL_DEBUG if self.debug else bootstrap_pb2.LOG_LEVEL_INFO,
                containerd_version="2.3.4+runwasm-harness", containerd_ttrpc_address=str(self.events_sock),
                containerd_grpc_address=self.grpc_address, containerd_binary="/usr/bin/containerd",
                socket_dir=str(self.socket_dir),
                extensions=[bootstrap_pb2.Extension(value=options)] if options is not None else []).SerializeToString()
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=bundle, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate(stdin)
        if proc.returncode != 0:
            raise RuntimeError(f"shim start failed (exit {proc.returncode}): {out.decode(errors='replace').strip()}")
        if self.legacy:
            return out.decode().strip(), 2
        result = bootstrap_pb2.BootstrapResult.FromString(out)
        if result.protocol != "ttrpc" or not result.address:
            raise RuntimeError(f"unexpected bootstrap result: {result}")
        return result.address, result.version

    async def shim_delete(self, container_id: str, bundle: Path) -> pb.DeleteResponse:
        argv = [*shim_command(), "-namespace", NAMESPACE, "-address", self.grpc_address,
                "-publish-binary", "/usr/bin/containerd", "-id", container_id, "-bundle", str(bundle), "delete"]
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=bundle, stdin=asyncio.subprocess.DEVNULL, env=dict(os.environ, **self.shim_env),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"shim delete failed (exit {proc.returncode}): {err.decode(errors='replace')}")
        return pb.DeleteResponse.FromString(out)

    def fifos(self, container_id: str) -> tuple[str, str, str]:
        d = self.root / "fifo" / container_id
        d.mkdir(parents=True)
        paths = tuple(str(d / f"{container_id}-{n}") for n in ("stdin", "stdout", "stderr"))
        for p in paths:
            os.mkfifo(p)
        return paths  # type: ignore[return-value]


class TaskClient:
    """Task API calls on one shim connection (v2 or v3 service name)."""

    def __init__(self, client: Client, version: int, metadata: dict[str, str] | None = None) -> None:
        self.client = client
        self.service = f"containerd.task.v{3 if version >= 3 else 2}.Task"
        self.metadata = dict(metadata or {})

    async def call(self, method: str, req: Any, resp_cls: Any, timeout: float | None = None,  # noqa: ASYNC109
                   metadata: dict[str, str] | None = None) -> Any:
        md = {"containerd-namespace-ttrpc": NAMESPACE, **self.metadata, **(metadata or {})}
        data = await self.client.call(self.service, method, req.SerializeToString(),
                                      timeout=timeout, metadata=md)
        return resp_cls.FromString(data)


async def copy_fifo(path: str, sink: int, done: asyncio.Event) -> None:
    """Copy a FIFO to ``sink`` until its writers have closed it (or never opened it by ``done``)."""
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        readable = asyncio.Event()
        loop.add_reader(fd, readable.set)
        try:
            seen_writer = False
            while True:
                await readable.wait()
                readable.clear()
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if data:
                    seen_writer = True
                    os.write(sink, data)
                elif seen_writer or done.is_set():
                    return
                else:
                    await asyncio.sleep(0.005)  # no writer yet: EOF until the workload opens it
                    readable.set()
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


def forwardable_stdin(fd: int) -> bool:
    """Whether ``fd`` can be our task's stdin: it is open, and it is not a terminal whose
    foreground is another process group (reading it would stop us with SIGTTIN)."""
    try:
        os.fstat(fd)
    except OSError:
        return False
    if not os.isatty(fd):
        return True
    try:
        foreground = os.tcgetpgrp(fd)
    except OSError:  # a terminal that is not our controlling one: reading it cannot stop us
        return True
    return foreground == os.getpgrp()


async def _write_all(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            writable = asyncio.Event()
            loop.add_writer(fd, writable.set)
            try:
                await writable.wait()
            finally:
                loop.remove_writer(fd)


async def feed_stdin(source: int, fifo: int, close_io: Callable[[], Awaitable[object]]) -> None:
    """Copy ``source`` into the task's stdin FIFO (``fifo``, a non-blocking fd this function
    closes) until EOF, then close the FIFO and call ``close_io`` (CloseIO), as ctr does.

    ``source`` is never switched to non-blocking mode (it may be the user's terminal): a
    pollable source is read when readable; a regular file or /dev/null (not pollable) is read
    directly, which never blocks. Cancel the task to stop early (the task exited).
    """
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    try:
        loop.add_reader(source, readable.set)
        pollable = True
    except PermissionError:  # epoll refuses regular files and /dev/null
        pollable = False
    try:
        while True:
            if pollable:
                await readable.wait()
                readable.clear()
            try:
                data = os.read(source, 65536)
            except BlockingIOError:
                continue
            except OSError as err:  # EIO: the terminal went away; treat it as the end of input
                if err.errno != errno.EIO:
                    raise
                data = b""
            if not data:
                break
            await _write_all(fifo, data)
    finally:
        if pollable:
            loop.remove_reader(source)
        os.close(fifo)
    await close_io()


@contextlib.asynccontextmanager
async def connected(address: str, version: int, metadata: dict[str, str] | None = None) -> AsyncIterator[TaskClient]:
    client = await Client.connect(address)
    try:
        yield TaskClient(client, version, metadata)
    finally:
        await client.close()


async def _teardown_task(t: TaskClient, container_id: str, created: bool) -> None:
    """What containerd does after a failed or interrupted run: kill, delete, shutdown (best effort)."""
    with contextlib.suppress(Exception):
        if created:
            with contextlib.suppress(Exception):
                await t.call("Kill", pb.KillRequest(id=container_id, signal=9), empty_pb2.Empty, timeout=3)
            with contextlib.suppress(Exception):
                await t.call("Wait", pb.WaitRequest(id=container_id), pb.WaitResponse, timeout=5)
            with contextlib.suppress(Exception):
                await t.call("Delete", pb.DeleteRequest(id=container_id), pb.DeleteResponse, timeout=5)
        await t.call("Shutdown", pb.ShutdownRequest(id=container_id), empty_pb2.Empty, timeout=3)


async def run_task(h: Harness, container_id: str, bundle: Path, *, stdout: int = 1, stderr: int = 2,
                   on_started: object = None, kill_after: float | None = None,
                   options: Any = None, stdin: int | None = None) -> TaskResult:
    """Start the shim for ``bundle`` and run one task to completion, as ``ctr run --rm`` does.

    ``stdin``: an fd whose contents become the task's stdin (see ``feed_stdin``); at its EOF the
    task's stdin is closed (CloseIO). The task gets no stdin when it is None or not
    ``forwardable_stdin``. Input left unread when the task exits is not consumed further.

    On an error or cancellation the task is killed, deleted and the shim shut down (as containerd
    does after a failed Create), then the binary's ``delete`` runs, and the error propagates.
    """
    address, version = await h.shim_start(container_id, bundle, options)
    stdin_p, stdout_p, stderr_p = h.fifos(container_id)
    done = asyncio.Event()
    copiers = [asyncio.create_task(copy_fifo(stdout_p, stdout, done)),
               asyncio.create_task(copy_fifo(stderr_p, stderr, done))]
    # containerd's side of the stdin FIFO, open before Create; O_RDWR never blocks on open
    fifo_in = os.open(stdin_p, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC) if stdin is not None \
        and forwardable_stdin(stdin) else None
    feeder: asyncio.Task[None] | None = None
    created_ok = False
    try:
        async with connected(address, version, h.trace_metadata) as t:
            try:
                created = await t.call("Create", pb.CreateTaskRequest(
                    id=container_id, bundle=str(bundle), stdin=stdin_p if fifo_in is not None else "",
                    stdout=stdout_p, stderr=stderr_p, options=options), pb.CreateTaskResponse)
                created_ok = True
                waiter = asyncio.create_task(t.call("Wait", pb.WaitRequest(id=container_id), pb.WaitResponse))
                await t.call("Start", pb.StartRequest(id=container_id), pb.StartResponse)
                if fifo_in is not None and stdin is not None:
                    fifo, fifo_in = fifo_in, None  # feed_stdin owns it now
                    feeder = asyncio.create_task(feed_stdin(stdin, fifo, lambda: t.call(
                        "CloseIO", pb.CloseIORequest(id=container_id, stdin=True), empty_pb2.Empty)))
                if callable(on_started):
                    on_started(t)
                if kill_after is not None:
                    await asyncio.sleep(kill_after)
                    await t.call("Kill", pb.KillRequest(id=container_id, signal=9), empty_pb2.Empty)
                waited = await waiter
                if feeder is not None:  # the rest of the input is not the task's any more
                    feeder.cancel()
                done.set()
                await asyncio.wait(copiers, timeout=5)
                await t.call("Delete", pb.DeleteRequest(id=container_id), pb.DeleteResponse)
                await t.call("Shutdown", pb.ShutdownRequest(id=container_id), empty_pb2.Empty, timeout=3)
            except BaseException:
                await _teardown_task(t, container_id, created_ok)
                raise
    finally:
        done.set()
        for c in copiers:
            c.cancel()
        feed_error: BaseException | None = None
        if feeder is not None:
            feeder.cancel()
            try:
                await feeder  # it closes its fifo fd
            except asyncio.CancelledError:
                pass
            except Exception as err:  # reading our stdin or CloseIO failed: after the cleanup
                feed_error = err
        if fifo_in is not None:
            os.close(fifo_in)
        await h.shim_delete(container_id, bundle)
    if feed_error is not None:
        raise RuntimeError(f"failed to forward stdin to task {container_id!r}: {feed_error}") from feed_error
    return TaskResult(container_id, created.pid, waited.exit_status)
