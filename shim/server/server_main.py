"""The long-lived shim server process (``containerd-shim-runwasm-v1 _runwasm_serve``).

Launched by ``start`` in its own session with /dev/null stdio, the listening socket inherited
(fd number in ``RUNWASM_SHIM_LISTEN_FD``) and the start settings as JSON in
``RUNWASM_SHIM_SETTINGS``. Order matters:

1. log FIFO dup'ed onto fd 2, so tracebacks of last resort reach containerd's log;
2. child subreaper, so every workload is re-parented here and reaped by ``Reaper``;
3. the zygote is forked *before* anything can start a thread (OTel exporters, asyncio
   ``to_thread``, wasmtime compile threads); it preloads wasmtime for the Wasm workloads;
4. then the asyncio loop: ttrpc server, Task service, event publisher.

It survives containerd restarts (a closed connection is not a reason to exit) and exits after
``Shutdown`` when it hosts no containers, or on SIGTERM/SIGINT, draining queued events first.
Usually it is not exec'd but forked from the node's warm template (``shim/template/``), which
runs this same ``serve_main``. The runtime option ``StandbySeconds`` (an idle server waiting to
be adopted by the next ``start``) is retired: accepted, logged as deprecated, no effect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runwasm.shim.common.options import RuntimeOptions
from runwasm.shim.common.otel_env import ENV_HANDOFF
from runwasm.shim.entry.bootstrap import Settings
from runwasm.shim.entry.start import ENV_LISTEN_FD, ENV_SETTINGS, settings_from_doc

if TYPE_CHECKING:
    from runwasm.shim.ttrpc.server import Handler

log = logging.getLogger(__name__)

WASM_CACHE_ENV = "RUNWASM_WASM_CACHE"


def _defaults(settings: Settings) -> tuple[RuntimeOptions, str]:
    """The server's runtime options from its start options; (defaults, error text)."""
    from runwasm.shim.common.errors import InvalidArgumentError
    from runwasm.shim.common.options import parse as parse_options

    try:
        parsed = parse_options(settings.options, source="start options")
    except InvalidArgumentError as err:  # start validated them already; never take the server down
        return RuntimeOptions(), str(err)
    return (parsed.options if parsed is not None else RuntimeOptions()), ""


def _attach_log(settings: Settings, defaults: RuntimeOptions, options_error: str) -> None:
    """The group's ``log`` FIFO becomes fd 2 (workloads get it as their log too)."""
    from runwasm.shim.server import logs

    log_fd = logs.open_log_fifo(settings.bundle)
    if log_fd >= 0:
        os.dup2(log_fd, 2)
        os.close(log_fd)
    logs.setup(2, debug=settings.debug or defaults.debug, namespace=settings.namespace, container_id=settings.id)
    if options_error:
        log.error("ignoring runtime options: %s", options_error)


def _setup_telemetry(started_ns: int, handoff: str) -> None:
    """OTel from the standard OTEL_* environment (after the zygote fork: exporters run threads)."""
    from runwasm.shim.common import otel_env, tracing
    from runwasm.shim.server import otel_metrics

    try:
        config = otel_env.parse()
    except otel_env.OtelConfigError as err:
        log.error("OpenTelemetry disabled: %s", err)
        config = otel_env.OtelConfig()
    tracing.setup(config)
    otel_metrics.setup(config)
    tracing.adopt_handoff(handoff, started_ns)
    if config.any:
        log.debug("OpenTelemetry: traces=%s (%s) metrics=%s (%s) service.name=%s", config.traces,
                  config.traces_protocol, config.metrics, config.metrics_protocol, config.service_name)


def _flush_telemetry() -> None:
    from runwasm.shim.common import tracing
    from runwasm.shim.server import otel_metrics

    tracing.shutdown()
    otel_metrics.shutdown()


def serve_main() -> int:
    import time

    from runwasm.shim.common import nsutil
    from runwasm.shim.spawn.zygote import Zygote

    started_ns = time.time_ns()

    settings, socket_path = settings_from_doc(json.loads(os.environ.pop(ENV_SETTINGS)))
    listen_fd = int(os.environ.pop(ENV_LISTEN_FD))
    handoff = os.environ.pop(ENV_HANDOFF, "")  # start -> server trace context (see shim/common/tracing.py)
    defaults, options_error = _defaults(settings)
    _attach_log(settings, defaults, options_error)
    os.chdir("/")
    nsutil.set_child_subreaper()
    zygote = Zygote()
    zygote.start(preload=("wasmtime", "runwasm.wasm.child", "runwasm.wasm.task", "runwasm.shim.spawn.wasm_workload",
                          "runwasm.linux.init"))
    _setup_telemetry(started_ns, handoff)
    log.info("shim server started (pid %d, %s protocol, containerd %s), listening on %s",
             os.getpid(), settings.mode, settings.containerd_version or "<legacy>", socket_path)
    try:
        asyncio.run(_main(settings, socket_path, socket.socket(fileno=listen_fd), zygote, defaults))
    finally:
        zygote.close()
        _flush_telemetry()
        if log.isEnabledFor(logging.DEBUG):  # the start-up cost promise: none of it without OTEL_*
            import sys

            otel = sorted({m.split(".")[1] for m in sys.modules if m.startswith("opentelemetry.")})
            log.debug("opentelemetry packages loaded: %s", ",".join(otel) or "none")
        log.info("shim server exiting")
    return 0


async def _main(settings: Settings, socket_path: str, listener: socket.socket, zygote: object,
                defaults: RuntimeOptions) -> None:
    """Serve the container group until Shutdown (with no containers left) or SIGTERM/SIGINT."""
    from runwasm.shim.server.reaper import Reaper

    loop = asyncio.get_running_loop()
    reaper = Reaper()
    reaper.install(loop)
    if defaults.standby_seconds > 0:
        log.warning("runtime option StandbySeconds = %d is deprecated and has no effect: servers are forked "
                    "from the node's warm template (shim/template/), so there is no boot left to save",
                    defaults.standby_seconds)
    try:
        await _serve(settings, listener, zygote, defaults, reaper, asyncio.Event())
    finally:
        listener.close()
        try:
            os.unlink(socket_path)
        except OSError:
            pass


def _sandbox_handlers(service: object, zygote: object, reaper: object, shutdown: Callable[[], None],
                      namespace: str, observers: list[Callable[[object], None]]) -> dict[tuple[str, str], Handler]:
    """The Sandbox API next to Task v2/v3 (``sandboxer = "shim"``; docs/design.md, "Sandbox API")."""
    from runwasm.shim.common.errors import ShimError
    from runwasm.shim.server.reaper import Reaper
    from runwasm.shim.server.sandbox import SandboxService
    from runwasm.shim.server.sandbox_holder import ZygoteHolderLauncher
    from runwasm.shim.server.sandbox_rpc import SandboxRpc
    from runwasm.shim.server.sandbox_rpc import handlers as sandbox_handlers
    from runwasm.shim.server.task import TaskService
    from runwasm.shim.spawn.zygote import Zygote

    assert isinstance(service, TaskService)
    assert isinstance(zygote, Zygote)
    assert isinstance(reaper, Reaper)

    async def kill_containers() -> None:
        for cid in list(service.containers):
            try:
                await service.kill(cid, "", signal.SIGKILL, True)
            except ShimError as err:  # already exited: nothing left to stop
                log.info("sandbox stop: container %s: %s", cid, err)

    sandboxes = SandboxService(namespace, ZygoteHolderLauncher(zygote, reaper), kill_containers, shutdown)
    observers.append(sandboxes.observe)
    return sandbox_handlers(SandboxRpc(sandboxes), namespace)


async def _serve(settings: Settings, listener: socket.socket, zygote: object, defaults: RuntimeOptions,
                 reaper: object, stop: asyncio.Event) -> None:
    from runwasm.shim.common import tracing
    from runwasm.shim.common.errors import InvalidArgumentError
    from runwasm.shim.server.backends import Backend, WasmBackend
    from runwasm.shim.server.events import EventPublisher
    from runwasm.shim.server.reaper import Reaper
    from runwasm.shim.server.task import TaskService
    from runwasm.shim.server.task_rpc import TaskRpc, handlers
    from runwasm.shim.spawn.zygote import Zygote
    from runwasm.shim.ttrpc.server import Server

    assert isinstance(zygote, Zygote)
    assert isinstance(reaper, Reaper)
    loop = asyncio.get_running_loop()
    publisher = EventPublisher(settings.ttrpc_address)
    publisher.start()
    cache_dir = os.environ.get(WASM_CACHE_ENV)

    def backend_factory(kind: str, cid: str, spec: object, bundle: Path, rootfs: Path,
                        opts: RuntimeOptions, image_module: object) -> Backend:
        from runwasm.oci.runtime_spec import RuntimeSpec
        from runwasm.shim.server.image_module import ImageModule

        assert isinstance(spec, RuntimeSpec)
        assert image_module is None or isinstance(image_module, ImageModule)
        if kind == "wasm":
            return WasmBackend(cid, spec, rootfs, opts.wasm_cache_dir or cache_dir, namespace=settings.namespace,
                               bundle=bundle, rootfs_readonly=opts.wasm_rootfs_readonly,
                               image_module=image_module, wasm_sandbox=opts.wasm_sandbox)
        if kind == "linux":
            from runwasm.shim.server.linux_backend import LinuxBackend

            backend: Backend = LinuxBackend.create(cid, settings.namespace, spec, bundle, rootfs)
            return backend
        raise InvalidArgumentError(f"no executor for kind {kind!r}")

    async def image_modules(cid: str, bundle: Path, spec: object, opts: RuntimeOptions) -> object:
        # containerd's gRPC socket: absent under the standalone harness (no image to ask about)
        sock = settings.grpc_address.removeprefix("unix://")
        if not sock or not os.path.exists(sock):
            return None
        from runwasm.oci.runtime_spec import RuntimeSpec
        from runwasm.shim.server.image_module import Precompile, fetch_image_module
        from runwasm.wasm.errors import SandboxError
        from runwasm.wasm.node_key import cache_dir_from
        from runwasm.wasm.sandbox import Sandbox, with_annotations

        assert isinstance(spec, RuntimeSpec)
        # the engine settings of the workload's own Sandbox (backends.WasmBackend._launch): the
        # preopens it adds there change no compiled code. Refused annotations: no precompilation
        # here; the backend refuses them with its own error
        try:
            sandbox: Sandbox | None = with_annotations(opts.wasm_sandbox or Sandbox(), spec.annotations)
        except SandboxError:
            sandbox = None
        precompile = None if sandbox is None else Precompile(sandbox, cache_dir_from(opts.wasm_cache_dir or cache_dir))
        return await loop.run_in_executor(None, fetch_image_module, settings.grpc_address, settings.namespace,
                                          cid, bundle, precompile)

    observers: list[Callable[[object], None]] = []  # the Sandbox API's record of the pod's containers

    def publish(event: object) -> None:
        for observe in observers:
            observe(event)
        publisher.publish(settings.namespace, event, tracing.outgoing())  # type: ignore[arg-type]

    service = TaskService(settings.namespace, zygote, reaper, publish,
                          backend_factory, defaults, image_modules)  # type: ignore[arg-type]
    server: Server

    def shutdown() -> None:
        log.info("shutting down")
        loop.call_soon(server.close)

    def on_signal() -> None:
        stop.set()
        shutdown()

    table = handlers(TaskRpc(service, shutdown), settings.namespace)
    table.update(_sandbox_handlers(service, zygote, reaper, shutdown, settings.namespace, observers))
    server = Server(table)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    loop.add_signal_handler(signal.SIGPIPE, lambda: None)
    try:
        await server.serve(listener)
    finally:
        await publisher.close()
