"""One container group (pod) served by a server process: everything that is the group's own.

Per group: its Task service and handler table (Task v2/v3 and the Sandbox API), a ttrpc
``Server`` on the group's listening socket, an ``EventPublisher`` (containerd's ttrpc address,
the group's namespace), its runtime defaults and its ``log`` FIFO. Shared by every group of the
process: the asyncio loop, the ``Reaper`` and the zygote (workloads are the server's children).

``GroupServer.run`` serves until the group is shut down (``Shutdown`` with no containers left,
or ``close()``: SIGTERM), then closes its listener, unlinks its socket and drains the group's
events. A per-group server runs one; the node server (``shim/server/node.py``) runs many.
Tasks of the group run in a context where ``group_logs.current`` names it, so their log records
go to the group's FIFO.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runwasm.shim.common.options import RuntimeOptions
from runwasm.shim.entry.bootstrap import Settings
from runwasm.shim.spawn.zygote import Spawned, Zygote

if TYPE_CHECKING:
    from runwasm.oci.runtime_spec import RuntimeSpec
    from runwasm.shim.server.backends import Backend
    from runwasm.shim.server.image_module import ImageModule
    from runwasm.shim.server.reaper import Reaper
    from runwasm.shim.ttrpc.server import Handler, RequestContext, Server

log = logging.getLogger(__name__)

WASM_CACHE_ENV = "RUNWASM_WASM_CACHE"
LOG_FD_NAME = "log"  # a workload's named fd that the zygote puts on its fd 2 (shim/spawn/zygote.py)


def defaults_of(settings: Settings) -> tuple[RuntimeOptions, str]:
    """The group's runtime options from its start options; (defaults, error text)."""
    from runwasm.shim.common.errors import InvalidArgumentError
    from runwasm.shim.common.options import parse as parse_options

    try:
        parsed = parse_options(settings.options, source="start options")
    except InvalidArgumentError as err:  # start validated them already; never take the server down
        return RuntimeOptions(), str(err)
    return (parsed.options if parsed is not None else RuntimeOptions()), ""


class GroupZygote(Zygote):
    """The shared zygote, with the group's log FIFO as every workload's fd 2."""

    def __init__(self, shared: Zygote, log_fd: int) -> None:
        super().__init__()
        self._shared = shared
        self._log_fd = log_fd
        self.pid = shared.pid

    async def spawn(self, entry: str, payload: Mapping[str, Any], fds: Mapping[str, int],
                    *, pidns: str | None = None) -> Spawned:
        if self._log_fd >= 0 and LOG_FD_NAME not in fds:
            fds = {**fds, LOG_FD_NAME: self._log_fd}
        return await self._shared.spawn(entry, payload, fds, pidns=pidns)

    def prestart(self) -> None:
        self._shared.prestart()

    def close(self) -> None:
        """The shared zygote outlives a group: nothing to close."""


SANDBOX_SERVICE = "containerd.runtime.sandbox.v1.Sandbox"  # sandbox_rpc.SERVICE
SANDBOX_METHODS = ("CreateSandbox", "StartSandbox", "Platform", "StopSandbox", "WaitSandbox", "SandboxStatus",
                   "PingSandbox", "ShutdownSandbox", "SandboxMetrics")  # its methods (a test compares them)


def _lazy_sandbox_handlers(build: Callable[[], dict[tuple[str, str], Handler]]) -> dict[tuple[str, str], Handler]:
    """The Sandbox API's handlers, built (``build``: ``_sandbox_handlers``) at its first request: a
    pod served through the Task API alone never imports the Sandbox service (~4 ms, which the first
    container after boot waited for in the template). Until then it has no sandbox, so its
    observer (the only other thing ``build`` sets up) would have done nothing."""
    table: dict[tuple[str, str], Handler] = {}

    def adapter(method: str) -> Handler:
        async def handle(payload: bytes, ctx: RequestContext) -> bytes:
            if not table:
                table.update(build())
            return await table[(SANDBOX_SERVICE, method)](payload, ctx)

        return handle

    return {(SANDBOX_SERVICE, m): adapter(m) for m in SANDBOX_METHODS}


def _sandbox_handlers(service: object, zygote: Zygote, reaper: Reaper, shutdown: Callable[[], None],
                      namespace: str, observers: list[Callable[[object], None]]) -> dict[tuple[str, str], Handler]:
    """The Sandbox API next to Task v2/v3 (``sandboxer = "shim"``; docs/design.md, "Sandbox API")."""
    from runwasm.shim.common.errors import ShimError
    from runwasm.shim.server.sandbox import SandboxService
    from runwasm.shim.server.sandbox_holder import ZygoteHolderLauncher
    from runwasm.shim.server.sandbox_rpc import SandboxRpc
    from runwasm.shim.server.sandbox_rpc import handlers as sandbox_handlers
    from runwasm.shim.server.task import TaskService

    assert isinstance(service, TaskService)

    async def kill_containers() -> None:
        for cid in list(service.containers):
            try:
                await service.kill(cid, "", signal.SIGKILL, True)
            except ShimError as err:  # already exited: nothing left to stop
                log.info("sandbox stop: container %s: %s", cid, err)

    sandboxes = SandboxService(namespace, ZygoteHolderLauncher(zygote, reaper), kill_containers, shutdown)
    observers.append(sandboxes.observe)
    return sandbox_handlers(SandboxRpc(sandboxes), namespace)


SANDBOX_SHUTDOWN_GRACE = 5.0  # seconds a shut-down sandbox's server waits for containerd to disconnect


def _unlink_if(path: str, ino: int) -> None:
    """Unlink ``path`` unless it is no longer our socket (a racing ``start`` found it dead and
    bound a new one there)."""
    try:
        if not ino or os.stat(path).st_ino == ino:
            os.unlink(path)
    except OSError:
        pass


class GroupServer:
    """Serve one group on ``listener`` (bound, listening; owned from now on). ``log_fd``: the
    group's log FIFO for its workloads' fd 2 (owned by the caller), -1 to leave the zygote's."""

    def __init__(self, settings: Settings, socket_path: str, listener: socket.socket, zygote: Zygote,
                 reaper: Reaper, defaults: RuntimeOptions, log_fd: int = -1) -> None:
        from runwasm.shim.server.events import EventPublisher

        self.settings = settings
        self.socket_path = socket_path
        self.listener = listener
        self.log_fd = log_fd
        self.zygote = zygote if log_fd < 0 else GroupZygote(zygote, log_fd)
        self.reaper = reaper
        self.defaults = defaults
        self.publisher = EventPublisher(settings.ttrpc_address)
        self._shutting_down = False
        self._sandbox_shut_down = False
        self.server = self._build()
        try:
            self._socket_ino = os.stat(socket_path).st_ino
        except OSError:
            self._socket_ino = 0

    def _build(self) -> Server:
        from runwasm.shim.common import tracing
        from runwasm.shim.server.task import TaskService
        from runwasm.shim.server.task_rpc import TaskRpc, handlers
        from runwasm.shim.ttrpc.server import Server

        settings = self.settings
        observers: list[Callable[[object], None]] = []  # the Sandbox API's record of the pod's containers

        def publish(event: object) -> None:
            for observe in observers:
                observe(event)
            self.publisher.publish(settings.namespace, event, tracing.outgoing())  # type: ignore[arg-type]

        self.service = TaskService(settings.namespace, self.zygote, self.reaper, publish,
                                   self._backend_factory, self.defaults, self._image_modules)
        table = handlers(TaskRpc(self.service, self.shutdown), settings.namespace)
        table.update(_lazy_sandbox_handlers(lambda: _sandbox_handlers(
            self.service, self.zygote, self.reaper, self._shutdown_after_sandbox, settings.namespace, observers)))
        return Server(table, on_connection_closed=self._connection_closed)

    def _backend_factory(self, kind: str, cid: str, spec: RuntimeSpec, bundle: Path, rootfs: Path,
                         opts: RuntimeOptions, image_module: ImageModule | None) -> Backend:
        from runwasm.shim.common.errors import InvalidArgumentError
        from runwasm.shim.server.backends import WasmBackend

        namespace = self.settings.namespace
        if kind == "wasm":
            return WasmBackend(cid, spec, rootfs, opts.wasm_cache_dir or os.environ.get(WASM_CACHE_ENV),
                               namespace=namespace, bundle=bundle, rootfs_readonly=opts.wasm_rootfs_readonly,
                               image_module=image_module, wasm_sandbox=opts.wasm_sandbox)
        if kind == "linux":
            from runwasm.shim.server.linux_backend import LinuxBackend

            backend: Backend = LinuxBackend.create(cid, namespace, spec, bundle, rootfs)
            return backend
        raise InvalidArgumentError(f"no executor for kind {kind!r}")

    async def _image_modules(self, cid: str, bundle: Path, spec: RuntimeSpec, opts: RuntimeOptions) -> ImageModule | None:
        # containerd's gRPC socket: absent under the standalone harness (no image to ask about)
        settings = self.settings
        sock = settings.grpc_address.removeprefix("unix://")
        if not sock or not os.path.exists(sock):
            return None
        from runwasm.shim.server.image_module import Precompile, fetch_image_module
        from runwasm.wasm.errors import SandboxError
        from runwasm.wasm.node_key import cache_dir_from
        from runwasm.wasm.sandbox import Sandbox, with_annotations

        # the engine settings of the workload's own Sandbox (backends.WasmBackend._launch): the
        # preopens it adds there change no compiled code. Refused annotations: no precompilation
        # here; the backend refuses them with its own error
        try:
            sandbox: Sandbox | None = with_annotations(opts.wasm_sandbox or Sandbox(), spec.annotations)
        except SandboxError:
            sandbox = None
        cache_dir = opts.wasm_cache_dir or os.environ.get(WASM_CACHE_ENV)
        precompile = None if sandbox is None else Precompile(sandbox, cache_dir_from(cache_dir))
        # to_thread, not run_in_executor: the worker runs in this task's context, so its log records
        # (the layer's "loaded"/"compiled" lines) reach this group's log FIFO (group_logs.current),
        # not the node server's fallback FIFO, whose reader may already be gone (another pod's)
        return await asyncio.to_thread(fetch_image_module, settings.grpc_address, settings.namespace, cid, bundle,
                                       precompile)

    @property
    def busy(self) -> bool:
        return bool(self.service.busy)

    def _shutdown_after_sandbox(self) -> None:
        """``ShutdownSandbox``'s end of the server: once containerd has closed its connections
        (``_connection_closed``), at the latest after ``SANDBOX_SHUTDOWN_GRACE``. Not at once:
        Go's ttrpc client can fail a call whose response and the connection's close arrive
        together ("ttrpc: closed"); containerd ignores that for the Task API's ``Shutdown``, but
        its sandbox controller failed ``RemovePodSandbox`` with it (1 run in 2 under load)."""
        self._sandbox_shut_down = True
        asyncio.get_running_loop().call_later(SANDBOX_SHUTDOWN_GRACE, self.shutdown)

    def _connection_closed(self, _peer: object) -> None:
        if self._sandbox_shut_down and self.server.connections == 0:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop serving the group (after the current reply is flushed)."""
        if self._shutting_down:
            return
        self._shutting_down = True
        log.info("shutting down")
        if log.isEnabledFor(logging.DEBUG):
            # the start-up cost promise (none of it without OTEL_*), reported while containerd still
            # reads the group's log: the `delete` after Shutdown can finish (and containerd stop
            # reading) before the process's own report at exit (server_main.serve_main)
            import sys

            otel = sorted({m.split(".")[1] for m in sys.modules if m.startswith("opentelemetry.")})
            log.debug("opentelemetry packages loaded: %s", ",".join(otel) or "none")
        asyncio.get_running_loop().call_soon(self.server.close)

    async def run(self) -> None:
        """Serve until shut down; then drain the group's events and release its socket."""
        self.publisher.start()
        try:
            await self.server.serve(self.listener)
        finally:
            # the socket goes first: a `start` of this group arriving while the events drain
            # must find it dead and start a new server, not connect to a listener nobody accepts on
            self.listener.close()
            _unlink_if(self.socket_path, self._socket_ino)
            await self.publisher.close()
