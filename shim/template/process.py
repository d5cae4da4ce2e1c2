"""The template process (``containerd-shim-runwasm-v1 _runwasm_template``).

Launched in the background by the first ``start`` on a node that finds none (its own session,
/dev/null stdio). Life cycle:

1. take ``template-<key>.lock`` (flock, held for life, the file removed at exit: ``node_handoff.take_lock``):
   a second template exits at once;
2. with collections off, import what a ``start`` child runs (``PRELOAD_FIRST``);
3. bind ``template-<key>.sock`` (SOCK_SEQPACKET, 0600, directory 0700), write the pid file,
   ``gc.freeze()`` so the children's garbage collections do not write to the shared pages;
   then import the rest of ``PRELOAD`` (what a server needs) one module at a time, accepting
   between them: the first container's ``start`` runs in its child meanwhile, and its server
   fork is served once they are all in (freeze again, collections on). Then, between requests,
   not within ``QUIET_AFTER_FORK`` of the first server fork, and at the lowest CPU priority
   (``LATER_NICE``: the first container, forked as soon as the template is warm, does not share
   the CPUs with these imports), import what the zygotes,
   workloads and rarer requests need (``PRELOAD_LATER``: the Wasm and Linux workload entries,
   ``delete``, the Linux executor...) and freeze again, so the first container on a node waits
   only for the imports of its own path;
4. accept: check the peer's uid (SO_PEERCRED, must be ours: root), fork one child per
   connection and go back to ``accept`` at once (children are reaped by ``SIGCHLD=SIG_IGN``);
   between requests, exit when the installation's code changed on disk (``key.code_identity``).
   Each child gets a channel (SOCK_SEQPACKET pair) on which its ``start`` asks the template to
   fork the group's server (``server.serve_fork_request``): forked from the template's own
   image, the server and its zygote do not start with the pages the child wrote.

The template stays single-threaded for life (forking a threaded process is unsafe) and never
runs an event loop. SIGTERM/SIGINT: remove the socket and exit; the servers it forked are
detached and unaffected, as is everything when it is SIGKILLed (the next exec finds the
socket dead and falls back to running the action itself).

The child (``_child``) reads the request, takes the caller's fds 0-2, cwd, umask, environment
and argv, runs ``runwasm.shim.__main__.main`` and answers ``exit <code>``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import select
import signal
import socket
import struct
import sys
import time

from runwasm.shim.common import node_handoff
from runwasm.shim.template import client, dccache, key, server

# imported before the socket appears: what a `start` child runs (``PRELOAD_FIRST``); then, while
# that child runs (the first container after boot: its `start` works on the other CPU), the rest
# of what a server needs for a Wasm container; the child's request for its server is served only
# once all of it is in, so that every server is forked from a complete template. Not the Linux
# executor, the console, the metrics encoder, the image model (for a module that is not in the
# rootfs), the Sandbox API (built at its first request: ``group._lazy_sandbox_handlers``) nor
# `delete`: a server that needs one imports it, and PRELOAD_LATER brings them in for the servers
# forked after it; not ``entry.info`` either (``-info`` is never forwarded).
PRELOAD_FIRST = ("json", "runwasm.shim.__main__", "runwasm.shim.entry.start", "runwasm.shim.entry.flags",
                 "runwasm.shim.entry.bootstrap", "runwasm.shim.common.otel_env", "runwasm.shim.template.server")
PRELOAD = (
    *PRELOAD_FIRST, "asyncio", "logging", "ctypes",
    "google.protobuf.empty_pb2", "google.protobuf.any_pb2", "google.protobuf.timestamp_pb2",
    "runwasm.shim.server.server_main", "runwasm.shim.server.task", "runwasm.shim.server.task_rpc", "runwasm.shim.ttrpc.server",
    "runwasm.shim.server.events", "runwasm.shim.server.backends", "runwasm.shim.server.reaper",
    "runwasm.shim.spawn.zygote", "runwasm.shim.common.tracing", "runwasm.shim.server.logs",
    "runwasm.shim.server.router", "runwasm.shim.server.group",
    "runwasm.shim.server.group_logs", "runwasm.shim.server.node", "runwasm.shim.common.node_handoff",
    "runwasm.shim.server.process", "runwasm.shim.server.preopens",
    "runwasm.shim.server.private_rootfs", "runwasm.shim.server.events_factory", "runwasm.shim.server.stdio",
    "runwasm.shim.common.rootfs_plan", "runwasm.shim.common.mounts",
    "runwasm.linux.cgroups", "runwasm.linux.task_cgroup",
    "runwasm.oci.runtime_spec", "runwasm.wasm.payload",
)
# imported one at a time between requests once listening: `delete` (the first container's comes
# ~0.1 s after the socket appears), what the zygotes and workloads need (a server forked before
# they are in gets a zygote that imports them itself, as before), then what only a Linux
# container or a Stats/console request needs.
# Not wasmtime-py (``wasmtime``, ``runwasm.wasm.task``): no long-lived process keeps it (~0.8
# MiB of PSS per pod at 10 pods, docs/design.md "Memory per pod"); only a workload that needs
# it imports it (~40 ms): a Create without a cached link-check verdict, an in-process task.
PRELOAD_LATER = ("runwasm.shim.entry.delete", "runwasm.wasm.child", "runwasm.wasm.fast_min",
                 "runwasm.shim.spawn.wasm_workload", "runwasm.linux.init", "runwasm.shim.server.linux_backend",
                 "runwasm.shim.server.console", "runwasm.shim.server.metrics", "runwasm.linux.stats",
                 "runwasm.shim.server.image_module", "runwasm.shim.server.sandbox_rpc",
                 "runwasm.shim.server.sandbox_holder")
LATER_NICE = 19
"""The template's nice value while it imports a ``PRELOAD_LATER`` module (root only; back to its
own priority before it accepts or forks anything): the first container, forked as soon as the
template listens, keeps the CPUs (it needs no wasmtime-py when its link-check verdict is cached,
``runwasm.wasm.fast_min``)."""
_base_nice: int | None = None  # the template's priority, while lowered for a PRELOAD_LATER import
QUIET_AFTER_FORK = 0.5
"""Seconds without a ``PRELOAD_LATER`` import after the template forked its first server. Even
at ``LATER_NICE`` those imports slowed the start-up of the server just forked (the first
container after boot: its server and zygote start while the template has them all still to
do): from the server's fork to containerd's Create arriving 20.5 and 29.3 ms against 14.7 and
15.0 with this pause (containerd 2.3.4, ``tests.bench_phases``, docs/design.md "The first
container after boot, fourth pass"). Only after the first: servers forked back to back (a
server per container on containerd 1.6) would otherwise put the imports off for as long as
they keep coming, and every server forked meanwhile would import them itself."""
IDENTITY_EVERY = 1.0  # seconds between code checks while requests arrive
CHILD_POLL = 0.05  # seconds between PRELOAD_LATER checks while a child is alive
IDLE_POLL = 2.0


class _Stop(Exception):
    pass


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _recv(conn: socket.socket) -> tuple[bytes, list[int]]:
    msg, fds, _flags, _addr = socket.recv_fds(conn, client.MAX_REQUEST, 8)
    return msg, fds


def _child(conn: socket.socket, install: str, lock: int, channel: socket.socket, close: list[int]) -> None:
    """One request, in a fresh fork of the template; never returns. ``channel``: to the
    template, which forks a server this request needs (``server.serve_fork_request``);
    ``close``: the template's other channels."""
    code = 1
    try:
        gc.enable()  # off while the template imports (template_main); on in what this child runs
        os.close(lock)  # the flock must die with the template, not live on in forked servers
        for fd in close:
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        conn.settimeout(10.0)
        msg, fds = _recv(conn)
        try:
            req_key, req_ns, cwd, umask, argv, env = client.decode_request(msg)
        except ValueError as err:
            conn.send(f"refused {err}".encode())
            os._exit(0)
        if req_key != install or len(fds) != 3 or not argv:
            conn.send(b"refused installation key or fds do not match")
            os._exit(0)
        if req_ns != key.namespaces():
            # the server forked here would run in the template's namespaces, not the caller's
            conn.send(f"refused namespaces differ: caller {req_ns}, template {key.namespaces()}".encode())
            os._exit(0)
        try:
            os.chdir(cwd)
        except OSError as err:
            conn.send(f"refused cwd: {err}".encode())
            os._exit(0)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            if fd > 2:
                os.close(fd)
        os.umask(umask)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = list(argv)
        import runwasm.shim.template as template
        from runwasm.shim.template import server

        template.in_template_child = True
        server.inherited_to_close = [conn.fileno(), channel.fileno()]
        server.template_channel = channel
        from runwasm.shim.__main__ import main

        try:
            code = main(list(argv[1:]))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - the caller gets a traceback on its stderr, as if exec'd
            import traceback

            os.write(2, traceback.format_exc().encode())
            code = 1
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:
            pass
        conn.send(f"exit {code}".encode())
    finally:
        os._exit(0)


def _preload(names: tuple[str, ...] | list[str]) -> None:
    for name in names:
        if name == "asyncio":
            import_asyncio_without_tls()
            continue
        try:
            importlib.import_module(name)
        except ImportError as err:
            os.write(2, f"runwasm template: cannot preload {name}: {err}\n".encode())


def _lower_priority() -> None:
    global _base_nice
    if os.geteuid() != 0:  # only root may take the priority back (in _child and afterwards)
        return
    try:
        base = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, max(base, LATER_NICE))
    except OSError:
        return
    _base_nice = base


def _restore_priority() -> None:
    global _base_nice
    if _base_nice is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, _base_nice)
        except OSError:
            pass
        _base_nice = None


def _serve_channel(channel: socket.socket, close: list[int]) -> bool:
    """``server.serve_fork_request`` with SIGTERM/SIGINT held until the child has its answer:
    a template stopped between the fork and the reply would leave a server the child's
    ``start`` cannot report (it fails rather than fork a second one)."""
    stops = {signal.SIGTERM, signal.SIGINT}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        return server.serve_fork_request(channel, close)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def import_asyncio_without_tls() -> None:
    """Import asyncio with ``ssl`` unavailable, then make ``ssl`` importable again.

    asyncio imports ``ssl`` for its TLS transports, which maps libssl and libcrypto (~1.2 MiB
    resident in the template, ~0.8 of it anonymous relocations, in every process forked from
    it). No server or workload uses asyncio's TLS (the registry client, ``oci/verify/registry``,
    is urllib, whose ``import ssl`` still works). In a template-forked process asyncio's TLS
    entry points (``ssl=`` of ``create_connection``, ``start_tls``) raise; an exec'd server
    (OpenTelemetry exporting, no template) has them."""
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # import ssl -> ImportError, which asyncio handles
    try:
        importlib.import_module("asyncio")
    finally:
        if sys.modules.get("ssl", 0) is None:
            del sys.modules["ssl"]


def template_main() -> int:
    # No automatic collection until the imports are frozen: the ~60 young collections they would
    # trigger cost ~8 ms of the boot the first container waits for, and find next to nothing
    # (~500 objects of the import machinery's cycles, left to the freeze below).
    gc.disable()
    dccache.install()  # first: the dataclass methods compiled by an earlier boot (saved once idle, below)
    sock_path = key.socket_path(os.environ)
    directory = os.path.dirname(sock_path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    lock_file = key.lock_path(sock_path)
    lock = node_handoff.take_lock(lock_file)
    if lock is None:
        return client.LOCKED_EXIT  # another template of this installation is alive (or starting)
    try:
        return _serve(sock_path, lock)
    finally:
        node_handoff.drop_lock(lock_file, lock)  # only the template gets here: its forks _exit


def _serve(sock_path: str, lock: int) -> int:
    os.chdir("/")
    install = key.install_key()
    identity = key.code_identity()
    _preload(PRELOAD_FIRST)
    # listen once a `start` can run in a child: the rest of PRELOAD is imported in the loop below,
    # while that child runs; its server fork waits for the end of those imports
    warming = [name for name in PRELOAD if name not in PRELOAD_FIRST]
    gc.freeze()  # what the children forked meanwhile share with us
    lst = node_handoff.listen_in_place(sock_path, 128)  # appears only once it accepts
    ino = os.stat(sock_path).st_ino
    pid_file = key.pid_path(sock_path)
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))

    def stop(_sig: int, _frame: object) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    checked = time.monotonic()
    pending = list(PRELOAD_LATER)
    lst.setblocking(False)
    poller = select.poll()
    poller.register(lst, select.POLLIN)
    channels: dict[int, socket.socket] = {}  # our end of each live child's channel, by fd
    quiet_until = 0.0  # no PRELOAD_LATER import before this (QUIET_AFTER_FORK)
    forked = False  # a server fork was served
    try:
        while True:
            # no PRELOAD_LATER import while a child may ask for a server fork (it would wait),
            # nor while the first server forked starts (QUIET_AFTER_FORK)
            if warming:
                timeout = 0.0
            elif pending:
                timeout = CHILD_POLL if channels else max(0.0, quiet_until - time.monotonic())
            else:
                timeout = IDLE_POLL
            events = poller.poll(timeout * 1000)
            conn = None
            for fd, _mask in events:
                if fd == lst.fileno():
                    try:
                        conn, _ = lst.accept()
                    except (BlockingIOError, InterruptedError):
                        pass
                elif warming:
                    pass  # a server fork waits until every PRELOAD module is in
                elif fd in channels:
                    if _serve_channel(channels[fd], [lst.fileno(), lock, *channels]):
                        if not forked:
                            quiet_until = time.monotonic() + QUIET_AFTER_FORK
                        forked = True
                    else:
                        poller.unregister(fd)
                        channels.pop(fd).close()
            if conn is not None:
                with conn:
                    if _peer_uid(conn) != os.geteuid():
                        conn.send(b"refused not the template's user")
                        continue
                    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                    if os.fork() == 0:
                        lst.close()
                        mine.close()
                        _child(conn, install, lock, theirs, list(channels))
                    theirs.close()
                    channels[mine.fileno()] = mine
                    poller.register(mine, select.POLLIN)
            if warming:  # at the template's own priority: the first container waits for these
                _preload(warming[:1])
                del warming[0]
                if not warming:
                    # no gc.collect() first: it would find ~500 objects (collections were off
                    # during the imports) and cost 10-20 ms that the first container waits for
                    gc.freeze()
                    gc.enable()
                continue
            if conn is None and (events or (pending and channels)):
                continue
            if conn is None and pending and time.monotonic() < quiet_until:
                continue
            if conn is None and pending:
                _lower_priority()  # back before anything is accepted or forked: see LATER_NICE
                try:
                    _preload(pending[:1])
                finally:
                    _restore_priority()
                del pending[0]
                if not pending:
                    gc.collect()
                    gc.freeze()
                    dccache.save()
                    dccache.uninstall()
                continue
            now = time.monotonic()
            if conn is None or now - checked >= IDENTITY_EVERY:
                checked = now
                if key.code_identity() != identity:
                    return 0  # the installation changed: let a fresh template take over
    except _Stop:
        return 0
    finally:
        lst.close()
        try:
            if os.stat(sock_path).st_ino == ino:
                os.unlink(sock_path)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            with open(pid_file) as f:
                if f.read().strip() == str(os.getpid()):
                    os.unlink(pid_file)


def stop_templates(directory: str, timeout: float = 5.0) -> list[int]:
    """SIGTERM (then SIGKILL) every live template whose pid file is in ``directory``; for tests
    and benchmarks that run templates of their own. Returns the pids signalled."""
    stopped = []
    for name in os.listdir(directory):
        if not name.endswith(".pid"):
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                pid = int(f.read().strip() or 0)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if key.TEMPLATE_ACTION.encode() not in f.read():
                    continue
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            continue
        stopped.append(pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.02)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return stopped
