"""The long-lived shim server process (``containerd-shim-runwasm-v1 _runwasm_serve``).

Launched by ``start`` in its own session with /dev/null stdio, the listening socket inherited
(fd number in ``RUNWASM_SHIM_LISTEN_FD``) and the start settings as JSON in
``RUNWASM_SHIM_SETTINGS``. Order matters:

1. log FIFO dup'ed onto fd 2, so tracebacks of last resort reach containerd's log;
2. child subreaper, so every workload is re-parented here and reaped by ``Reaper``;
3. the zygote is forked *before* anything can start a thread (OTel exporters, asyncio
   ``to_thread``, wasmtime compile threads); it preloads the workload entry modules (not
   wasmtime-py: a workload that needs it imports it);
4. then the asyncio loop: the group's ttrpc server, Task service and event publisher
   (``group.GroupServer``).

A server forked by a template's ``start`` has ``RUNWASM_SHIM_NODE_SOCKET`` set: it becomes the
*node server* of its containerd (``node.py``), which adopts the groups later ``start``s hand
over, one ``GroupServer`` each, sharing this process, its loop, reaper and zygote; its log
records are routed to each group's FIFO (``group_logs``). Without it (the exec'd path, a
Sandbox-API group, ``RUNWASM_NODE_SERVER=off``) it serves its one group.

It survives containerd restarts (a closed connection is not a reason to exit) and exits after
``Shutdown`` of its (last) group when it hosts no containers, or on SIGTERM/SIGINT, draining
queued events first.
Usually it is not exec'd but forked from the node's warm template (``shim/template/``), which
runs this same ``serve_main``. The runtime option ``StandbySeconds`` (an idle server waiting to
be adopted by the next ``start``) is retired: accepted, logged as deprecated, no effect.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
from typing import TYPE_CHECKING

from runwasm.shim.common.node_handoff import ENV_NODE_CLAIMED, ENV_NODE_SOCKET, decode_claimed
from runwasm.shim.common.options import RuntimeOptions
from runwasm.shim.common.otel_env import ENV_HANDOFF
from runwasm.shim.entry.bootstrap import Settings
from runwasm.shim.entry.start import ENV_LISTEN_FD, ENV_SETTINGS, settings_from_doc
from runwasm.shim.server.group import defaults_of

if TYPE_CHECKING:
    from runwasm.shim.server.group_logs import GroupLogRouter
    from runwasm.shim.spawn.zygote import Zygote

log = logging.getLogger(__name__)


def _attach_fifo(settings: Settings) -> None:
    """The group's ``log`` FIFO becomes fd 2 (the zygote's too: its last-resort messages)."""
    from runwasm.shim.server import logs

    log_fd = logs.open_log_fifo(settings.bundle)
    if log_fd >= 0:
        os.dup2(log_fd, 2)
        os.close(log_fd)


def _attach_log(settings: Settings, socket_path: str, defaults: RuntimeOptions, options_error: str,
                routed: bool) -> GroupLogRouter | None:
    """Log records go to fd 2 (``_attach_fifo``). ``routed`` (a node server): records are
    routed per group (``group_logs``); returns the router."""
    from runwasm.shim.server import group_logs, logs

    debug = settings.debug or defaults.debug
    router = None
    if routed:
        router = group_logs.install(socket_path, debug=debug, namespace=settings.namespace, container_id=settings.id)
    else:
        logs.setup(2, debug=debug, namespace=settings.namespace, container_id=settings.id)
    if options_error:
        log.error("ignoring runtime options: %s", options_error)
    return router


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
    from runwasm.shim.spawn import native as native_spawn
    from runwasm.shim.spawn.zygote import Zygote

    started_ns = time.time_ns()

    settings, socket_path = settings_from_doc(json.loads(os.environ.pop(ENV_SETTINGS)))
    listen_fd = int(os.environ.pop(ENV_LISTEN_FD))
    node_path = os.environ.pop(ENV_NODE_SOCKET, "")  # set by a template's start: may host other groups
    node_claimed = decode_claimed(os.environ.pop(ENV_NODE_CLAIMED, ""))  # that start claimed the node socket
    handoff = os.environ.pop(ENV_HANDOFF, "")  # start -> server trace context (see shim/common/tracing.py)
    _attach_fifo(settings)
    os.chdir("/")
    nsutil.set_child_subreaper()
    # The zygote first, before this process writes much: every page either of them writes
    # after the fork is copied, and a forked server shares its heap with the template too.
    zygote = Zygote()
    # not wasmtime-py: a task with a cached link-check verdict never needs it
    # (runwasm.wasm.fast_min), and a long-lived copy costs every pod memory (template/process.py);
    # the Linux init only once idle: the first Wasm container after boot, whose spawn request may
    # come before the zygote's imports are done, does not wait for it (~3 ms).
    # With the native spawn helper it is forked at the first spawn that needs it (Wasm tasks whose
    # plan the server makes need none: shim/spawn/native.py), or now, while containerd still
    # prepares the Create, when the first container does not look like Wasm
    lazy = native_spawn.helper_path() is not None and native_spawn.bundle_looks_wasm(settings.bundle)
    zygote.start(preload=("runwasm.wasm.child", "runwasm.wasm.fast_min", "runwasm.shim.spawn.wasm_workload"),
                 close=() if node_claimed is None else (node_claimed[0].fileno(), node_claimed[1]),
                 later=("runwasm.linux.init",), lazy=lazy)
    # what the zygote shares with us is never walked (and so never written) by our collections
    gc.freeze()
    defaults, options_error = defaults_of(settings)
    router = _attach_log(settings, socket_path, defaults, options_error, routed=bool(node_path))
    _setup_telemetry(started_ns, handoff)
    log.info("shim server started (pid %d, %s protocol, containerd %s), listening on %s",
             os.getpid(), settings.mode, settings.containerd_version or "<legacy>", socket_path)
    try:
        asyncio.run(_main(settings, socket_path, socket.socket(fileno=listen_fd), zygote, defaults, node_path,
                          router, node_claimed))
    finally:
        zygote.close()
        _flush_telemetry()
        if log.isEnabledFor(logging.DEBUG):  # the start-up cost promise: none of it without OTEL_*
            import sys

            otel = sorted({m.split(".")[1] for m in sys.modules if m.startswith("opentelemetry.")})
            log.debug("opentelemetry packages loaded: %s", ",".join(otel) or "none")
        log.info("shim server exiting")
    return 0


async def _main(settings: Settings, socket_path: str, listener: socket.socket, zygote: Zygote,
                defaults: RuntimeOptions, node_path: str, router: GroupLogRouter | None,
                node_claimed: tuple[socket.socket, int] | None = None) -> None:
    """Serve the group until Shutdown (with no containers left) or SIGTERM/SIGINT; as a node
    server (``node_path``), also every group handed over later, until none is left."""
    from runwasm.shim.server.group import GroupServer
    from runwasm.shim.server.reaper import Reaper

    loop = asyncio.get_running_loop()
    reaper = Reaper()
    reaper.install(loop)
    loop.add_signal_handler(signal.SIGPIPE, lambda: None)
    if defaults.standby_seconds > 0:
        log.warning("runtime option StandbySeconds = %d is deprecated and has no effect: servers are forked "
                    "from the node's warm template (shim/template/), so there is no boot left to save",
                    defaults.standby_seconds)
    if router is not None:
        from runwasm.shim.server import node

        await node.serve(node_path, settings, socket_path, listener, zygote, reaper, defaults, router,
                         node_claimed)
        return
    group = GroupServer(settings, socket_path, listener, zygote, reaper, defaults)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, group.server.close)
    await group.run()
