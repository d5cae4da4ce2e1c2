"""The node server: one long-lived server process hosting every group of one containerd.

A server forked from the warm template with ``RUNWASM_SHIM_NODE_SOCKET`` in its environment
becomes the node server for that key (``shim/common/node_handoff.py``) with ``node-<key>.lock``
(flock, non-blocking; held until it stops adopting) and ``node-<key>.sock`` (bound under a
temporary name, renamed into place once listening): normally the ``start`` that forked it
claimed both and handed them down (``RUNWASM_SHIM_NODE_CLAIMED``), else it claims them. Then it
serves its first group and adopts the groups later ``start``s hand over: each gets its own
``GroupServer`` (Task service, ttrpc server on the handed-over listener, event publisher, log
FIFO, runtime defaults); the loop, the reaper and the zygote are shared. If the lock is taken
(another node server of this key is alive) it serves its one group, as a per-group server.

Adoption: peer uid must be ours (SO_PEERCRED), the offer must decode with exactly one fd, the
shared zygote must be alive (if it died, the node stops adopting for good: later pods get a
new node server, as a dead per-pod zygote used to affect only its pod's later tasks); the
group is set up, ``adopted <pid>`` is sent, and only if that send succeeded does the group start
serving (otherwise the ``start`` gave up and serves it itself; the listener copy is closed).

Exit: when a group shuts down (``Shutdown`` with no containers left) only its server, listener,
publisher (drained) and log go; when no group is left the node first stops adopting (socket
unlinked, lock released: a racing ``start`` then gets a refusal or a reset and forks a server
of its own), then returns. SIGTERM/SIGINT: stop adopting, shut every group down, return.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
import socket

from runwasm.shim.common import node_handoff
from runwasm.shim.common.options import RuntimeOptions
from runwasm.shim.entry.bootstrap import Settings
from runwasm.shim.server import group_logs
from runwasm.shim.server.group import GroupServer, defaults_of
from runwasm.shim.server.reaper import Reaper
from runwasm.shim.spawn.zygote import Zygote

log = logging.getLogger(__name__)


def claim(path: str) -> tuple[socket.socket, int] | None:
    """Become the node server at ``path`` (``node_handoff.claim``): (non-blocking listening
    socket, lock fd), or None when another one holds the lock."""
    claimed = node_handoff.claim(path)
    if claimed is not None:
        claimed[0].setblocking(False)
    return claimed


class NodeServer:
    def __init__(self, path: str, listener: socket.socket, lock: int, zygote: Zygote, reaper: Reaper,
                 router: group_logs.GroupLogRouter) -> None:
        self.path = path
        self._listener: socket.socket | None = listener
        self._ino = os.stat(path).st_ino
        self._lock = lock
        self._zygote = zygote
        self._reaper = reaper
        self._router = router
        self.groups: dict[str, GroupServer] = {}
        self._log_fds: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._empty = asyncio.Event()
        self.adopting = True

    # --- groups -----------------------------------------------------------------------------

    def add_group(self, settings: Settings, socket_path: str, listener: socket.socket,
                  defaults: RuntimeOptions | None = None) -> GroupServer:
        """Set a group up (not serving yet: ``serve_group``)."""
        from runwasm.shim.server.logs import open_log_fifo

        if socket_path in self.groups:
            raise node_handoff.HandoffError(f"group socket {socket_path!r} is already served here")
        options_error = ""
        if defaults is None:
            defaults, options_error = defaults_of(settings)
        log_fd = open_log_fifo(settings.bundle)
        group = GroupServer(settings, socket_path, listener, self._zygote, self._reaper, defaults, log_fd)
        self._router.add(socket_path, log_fd, settings.namespace, settings.id, debug=settings.debug or defaults.debug)
        self._log_fds[socket_path] = log_fd
        if options_error:
            ctx = contextvars.copy_context()
            ctx.run(group_logs.current.set, socket_path)
            ctx.run(log.error, "ignoring runtime options: %s", options_error)
        return group

    def serve_group(self, group: GroupServer) -> None:
        key = group.socket_path
        self.groups[key] = group
        self._empty.clear()
        ctx = contextvars.copy_context()
        ctx.run(group_logs.current.set, key)
        task = asyncio.get_running_loop().create_task(self._run_group(group), context=ctx)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_group(self, group: GroupServer) -> None:
        key = group.socket_path
        log.info("serving group %s/%s on %s (%d groups in this server)", group.settings.namespace,
                 group.settings.id, key, len(self.groups))
        try:
            await group.run()
        except Exception:
            log.exception("group %s failed", key)
        finally:
            log.info("group %s/%s done", group.settings.namespace, group.settings.id)
            self._drop(key)

    def _drop(self, key: str) -> None:
        self.groups.pop(key, None)
        self._router.remove(key)
        fd = self._log_fds.pop(key, -1)
        if not self.groups:
            self.stop_adopting()  # before anything else can run: a racing start falls back
            self._empty.set()
        if fd >= 0:
            os.close(fd)

    # --- adoption ---------------------------------------------------------------------------

    def stop_adopting(self) -> None:
        """Refuse every later offer: unlink the socket, close it, release the lock."""
        if not self.adopting:
            return
        self.adopting = False
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._ino:
                os.unlink(self.path)
        if self._listener is not None:
            with contextlib.suppress(OSError):
                asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        if self._lock >= 0:
            node_handoff.drop_lock(node_handoff.lock_path(self.path), self._lock)
            self._lock = -1

    def _accept_ready(self) -> None:
        while self._listener is not None:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.error("node server: accept failed: %s", err)
                return
            with conn:
                try:
                    self.handle(conn)
                except OSError as err:  # the caller went away mid-offer: it serves the group itself
                    log.warning("node server: offer connection failed: %s", err)

    def handle(self, conn: socket.socket) -> None:
        """One offer on an accepted connection (blocking reads with a short timeout: the
        ``start`` has sent it before it waits)."""
        conn.settimeout(2.0)
        try:
            # read first: closing a connection with its offer unread would reset it, and the
            # refusal would not reach the caller
            msg, fds, _flags, _addr = socket.recv_fds(conn, node_handoff.MAX_MESSAGE, 4)
        except OSError as err:
            log.warning("node server: reading an offer failed: %s", err)
            return
        try:
            if node_handoff.peer_uid(conn) != os.geteuid():
                log.warning("node server: refused an offer from uid %d", node_handoff.peer_uid(conn))
                conn.send(b"refused not the node server's user")
                return
            self._adopt(conn, msg, fds)
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _adopt(self, conn: socket.socket, msg: bytes, fds: list[int]) -> None:
        from runwasm.shim.entry.start import settings_from_doc

        try:
            if not self.adopting:
                raise node_handoff.HandoffError("the node server is exiting")
            if self._zygote.gone():  # its pods could not start a task: let a new node server take over
                self.stop_adopting()
                raise node_handoff.HandoffError("the node server's zygote is gone")
            doc = node_handoff.decode_offer(msg, fds)
            settings, socket_path = settings_from_doc(doc)
            dup = os.dup(fds[0])
            try:
                listener = socket.socket(fileno=dup)
            except OSError:
                os.close(dup)
                raise node_handoff.HandoffError("the fd offered is not a unix stream socket") from None
            if listener.family != socket.AF_UNIX or listener.type != socket.SOCK_STREAM:
                listener.close()
                raise node_handoff.HandoffError("the fd offered is not a unix stream socket")
            try:
                group = self.add_group(settings, socket_path, listener)
            except BaseException:
                listener.close()
                raise
        except (node_handoff.HandoffError, TypeError, ValueError, KeyError, OSError) as err:
            log.warning("node server: refused an offer: %s", err)
            with contextlib.suppress(OSError):
                conn.send(f"refused {err}".encode())
            return
        try:
            conn.send(f"adopted {os.getpid()}".encode())
        except OSError as err:  # the start gave up: it serves the group itself
            log.warning("node server: %s/%s not adopted, the start went away: %s", settings.namespace,
                        settings.id, err)
            self._router.remove(socket_path)
            fd = self._log_fds.pop(socket_path, -1)
            if fd >= 0:
                os.close(fd)
            listener.close()
            return
        self.serve_group(group)

    # --- life cycle -------------------------------------------------------------------------

    def close(self) -> None:
        """SIGTERM/SIGINT: stop adopting and shut every group down."""
        self.stop_adopting()
        for group in list(self.groups.values()):
            group.server.close()

    async def run(self) -> None:
        """Adopt offers until the last group is done."""
        if self._listener is not None:  # not closed (SIGTERM) before we got here
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept_ready)
        try:
            await self._empty.wait()
            while self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            self.stop_adopting()


async def serve(node_path: str, settings: Settings, socket_path: str, listener: socket.socket, zygote: Zygote,
                reaper: Reaper, defaults: RuntimeOptions, router: group_logs.GroupLogRouter,
                claimed: tuple[socket.socket, int] | None = None) -> None:
    """Serve the first group as the node server at ``node_path``, or alone when another node
    server holds it. ``claimed``: the node socket and lock, already claimed by the ``start``
    that forked this server (``node_handoff.claim``); else the server tries to claim them."""
    loop = asyncio.get_running_loop()
    if claimed is not None:
        claimed[0].setblocking(False)
    else:
        try:
            claimed = claim(node_path)
        except OSError as err:
            log.warning("cannot listen for other groups on %s: %s", node_path, err)
    if claimed is None:
        group = GroupServer(settings, socket_path, listener, zygote, reaper, defaults, _open_log(settings))
        router.add(socket_path, group.log_fd, settings.namespace, settings.id, debug=settings.debug or defaults.debug)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, group.server.close)
        group_logs.current.set(socket_path)
        try:
            await group.run()
        finally:
            if group.log_fd >= 0:
                os.close(group.log_fd)
        return
    node = NodeServer(node_path, claimed[0], claimed[1], zygote, reaper, router)
    node.serve_group(node.add_group(settings, socket_path, listener, defaults))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.close)
    log.info("node server: adopting groups on %s", node_path)
    await node.run()


def _open_log(settings: Settings) -> int:
    from runwasm.shim.server.logs import open_log_fifo

    return open_log_fifo(settings.bundle)
