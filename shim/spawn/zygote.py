"""The zygote: a small process forked before the server starts any thread, that forks workloads.

Forking a process that runs threads (grpc, OTel exporters, wasmtime compile threads, asyncio
``to_thread`` workers) is unsafe, so the server forks this zygote first and asks it for every
workload process (docs/contributing.md, "Process model"). Protocol on a SOCK_SEQPACKET pair:

    server -> zygote   one packet: JSON {"entry", "payload", "names": [fd names], "pidns"}
                       with the fds attached (SCM_RIGHTS) in the order of "names"
    zygote -> server   one packet: {"pid": <host pid>, "start_time": <ticks>} or {"error": "<text>"}

A workload that stays in the server's pid namespace (``pidns`` null, every Wasm task) is made
by ONE fork whose parent is the server (``clone(CLONE_PARENT)``, ``_fork_sibling``); the zygote
reads its start time (field 22 of ``/proc/<pid>/stat``) at once, before it lets the workload
go (a byte on a pipe), so the workload cannot have exited and been reaped, its pid reused;
it does not wait for the workload to be scheduled. For a ``pidns`` the zygote
forks an intermediate that unshares or joins the pid namespace and forks the workload, reads
its start time while it is still its child (so it cannot have been reaped and the pid reused),
reports it through a pipe and exits; the workload is re-parented to the server (a child
subreaper). Either way the (pid, start time) pair is the workload's identity for the reaper,
and the server reaps it. In the workload:
``setsid()``, default signal dispositions, an empty signal mask, the named fds renumbered from 3
(stdio 0-2 stay as the zygote had them: /dev/null and the shim log; a named fd ``log`` replaces
fd 2: the log FIFO of the workload's group), every other fd closed,
a ``setns`` into the mount namespace named ``rootns`` when one is given (a container whose EROFS
rootfs is mounted privately, ``shim/server/private_rootfs.py``), then ``entry(payload, fds)``,
which must not return.

The zygote exits when the server's end of the socket closes.
"""

from __future__ import annotations

import array
import asyncio
import ctypes
import fcntl
import gc
import importlib
import json
import logging
import os
import select
import signal
import socket
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from runwasm.shim.common import nsutil
from runwasm.shim.common.statefile import process_start_time

log = logging.getLogger(__name__)

MAX_FDS = 16
_MAX_MSG = 1 << 20


class SpawnError(Exception):
    """The zygote could not create the workload process."""


class Spawned(NamedTuple):
    """A workload process: its host pid and start time (its identity for ``Reaper.watch``)."""

    pid: int
    start_time: int


def _recv_request(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    msg, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MSG, MAX_FDS)
    if not msg:
        return None
    return json.loads(msg), fds


def _become_workload(req: dict[str, Any], fds: list[int]) -> None:
    """Runs in the workload process; never returns."""
    try:
        os.setsid()
        for sig in signal.valid_signals():
            if sig in (signal.SIGKILL, signal.SIGSTOP):
                continue
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        names: list[str] = req["names"]
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1024) for fd in fds]
        named: dict[str, int] = {}
        for i, (name, fd) in enumerate(zip(names, high, strict=True)):
            os.dup2(fd, 3 + i, inheritable=False)
            named[name] = 3 + i
        os.closerange(3 + len(names), 65536)
        if "rootns" in named:  # the container's private rootfs namespace (shim/server/private_rootfs.py)
            from runwasm.linux import syscalls as sc

            ns = named.pop("rootns")
            sc.setns(ns, sc.CLONE_NEWNS)
            os.close(ns)
        if "log" in named:  # the group's log FIFO (a node server hosts many groups: shim/server/group.py)
            log_fd = named.pop("log")
            os.dup2(log_fd, 2)
            os.close(log_fd)
        for name, spans in (("trace", True), ("steps", False)):  # the workload's steps (runwasm.oci.steps)
            if name in named:  # "trace": they become spans; "steps": only log lines and metrics
                from runwasm.oci import steps

                steps.install(named.pop(name), spans)
        module, _, func = str(req["entry"]).partition(":")
        target = getattr(importlib.import_module(module), func)
        target(req["payload"], named)
        os._exit(0)  # an entry that returns is a bug; do not fall back into the zygote
    except BaseException:  # noqa: BLE001 - last resort in a forked child
        try:
            os.write(2, ("runwasm zygote: workload failed before its entry took over:\n"
                         + traceback.format_exc()).encode())
        finally:
            os._exit(127)


CLONE_PARENT = 0x00008000
CLONE_PIDFD = 0x00001000
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)  # the raw clone syscall's number
_SYS_PIDFD_SEND_SIGNAL = 424  # the same on every architecture (a syscall newer than 5.1's unification)


def _fork_sibling(pidfd_at: int) -> int:
    """``os.fork()``, but the child's parent is the zygote's parent (the server), so no
    intermediate process is needed to re-parent it: one fork of the ~40 MiB zygote instead of
    two. Returns 0 in the child and its pid in the zygote; OSError when the kernel refuses.

    The raw ``clone`` syscall with only ``CLONE_PARENT`` (plus no stack: the child continues on
    a copy of this one, as after fork) behaves like fork(2) apart from the parent. CPython's
    fork bookkeeping (import lock, ``os.register_at_fork`` hooks, thread state) is done by the
    same public API ``os.fork`` uses; the call goes through ``ctypes.pythonapi`` so the GIL is
    held throughout. glibc's ``fork`` wrapper also refreshes its cached thread id in the child:
    this child keeps the zygote's, which matters only to recursive/error-checking mutex owners
    and is consistent within the child (glibc's ``raise`` asks the kernel for the tid). The
    zygote is single-threaded, so no lock can be held by another thread at the clone.
    The child's exit signal is the zygote's own (SIGCHLD, CLONE_PARENT takes it from there).
    ``CLONE_PIDFD``: the kernel stores a pidfd of the child (close-on-exec, in the zygote only)
    in the C int at address ``pidfd_at``."""
    assert _SYS_CLONE is not None
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _clone(_SYS_CLONE, CLONE_PARENT | CLONE_PIDFD, 0, pidfd_at, 0, 0)
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone(CLONE_PARENT): {os.strerror(err)}")
    return int(pid)


def _syscall_function() -> Any:
    fn = ctypes.PyDLL(None, use_errno=True).syscall  # PyDLL: the GIL stays held across the call
    fn.restype = ctypes.c_long
    fn.argtypes = [ctypes.c_long, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return fn


_syscall = _syscall_function()
_clone = _syscall


def _pidfd_send_signal(pidfd: int, sig: int, info: int, flags: int) -> int:
    """0 when the process behind ``pidfd`` exists (running or a zombie not reaped yet), else -1."""
    return int(_syscall(_SYS_PIDFD_SEND_SIGNAL, pidfd, sig, info, flags, 0))


def _spawn(req: dict[str, Any], fds: list[int]) -> Spawned:
    if not req.get("pidns") and _SYS_CLONE is not None:
        return _spawn_sibling(req, fds)
    return _spawn_via_intermediate(req, fds)


def _spawn_sibling(req: dict[str, Any], fds: list[int]) -> Spawned:
    """One fork, the workload a child of the server (``_fork_sibling``). The zygote reads the
    workload's start time itself right after the clone, then lets it go (one byte on a pipe):
    until then the workload cannot exit, so it cannot have been reaped by the server and its
    pid reused. Only a SIGKILL from outside (nobody but the OOM killer knows the pid yet) could
    end it earlier; a pidfd taken at the clone, checked after the read, catches that, and it
    is a SpawnError (the server's reaper collects the exit). The zygote never waits for the
    workload to be scheduled."""
    r, w = os.pipe()
    pidfd = ctypes.c_int(-1)
    try:
        pid = _fork_sibling(ctypes.addressof(pidfd))
    except OSError as err:
        os.close(r)
        os.close(w)
        raise SpawnError(str(err)) from err
    if pid == 0:
        os.close(w)
        go = os.read(r, 1)
        os.close(r)
        if not go:  # the zygote died before it let the workload go
            os._exit(127)
        _become_workload(req, fds)
    os.close(r)
    try:
        start_time = process_start_time(pid)
        alive = _pidfd_send_signal(pidfd.value, 0, 0, 0) == 0
        if alive and start_time:
            os.write(w, b"g")
    finally:
        os.close(pidfd.value)
        os.close(w)  # without "g": EOF, and the workload exits at once
    if not alive or not start_time:
        raise SpawnError(f"workload process {pid} died before its start time could be read")
    return Spawned(pid, start_time)


def _spawn_via_intermediate(req: dict[str, Any], fds: list[int]) -> Spawned:
    r, w = os.pipe()
    mid = os.fork()
    if mid == 0:  # intermediate
        try:
            os.close(r)
            pidns = req.get("pidns")
            if pidns == "new":
                nsutil.unshare(nsutil.CLONE_NEWPID)
            elif pidns:
                nsfd = os.open(str(pidns), os.O_RDONLY | os.O_CLOEXEC)
                nsutil.setns(nsfd, nsutil.CLONE_NEWPID)
                os.close(nsfd)
            pid = os.fork()
            if pid == 0:
                os.close(w)
                _become_workload(req, fds)
            os.write(w, f"{pid} {process_start_time(pid)}".encode())
            os._exit(0)
        except BaseException as err:  # noqa: BLE001
            try:
                os.write(w, f"E{err}".encode())
            finally:
                os._exit(1)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(mid, 0)
    out = b"".join(chunks).decode()
    if not out or out.startswith("E"):
        raise SpawnError(out[1:] or "intermediate process died")
    pid_text, start_text = out.split()
    return Spawned(int(pid_text), int(start_text))


def _preload(names: Sequence[str]) -> None:
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            os.write(2, f"runwasm zygote: cannot preload {name}: {err}\n".encode())
            continue
        warm = getattr(module, "zygote_warm", None)
        if callable(warm):  # per-process caches every workload would otherwise fill again
            try:
                warm()
            except Exception as err:  # noqa: BLE001 - a cold cache is slower, not wrong
                os.write(2, f"runwasm zygote: warming {name} failed: {err}\n".encode())
    # what the zygote holds now (modules, warmed caches) is what every workload inherits:
    # frozen, neither the zygote's nor a workload's garbage collections walk (and so write to,
    # and unshare) those pages; no gc.collect() first: it would write to every object the
    # server made since the template's freeze, copying pages the zygote shares with the server
    gc.freeze()


def _zygote_main(sock: socket.socket, preload: Sequence[str], later: Sequence[str] = ()) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _preload(preload)
    pending = list(later)
    while True:
        if pending and not select.select([sock], [], [], 0)[0]:  # idle: one more module
            _preload(pending[:1])
            del pending[0]
            continue
        got = _recv_request(sock)
        if got is None:
            os._exit(0)
        req, fds = got
        try:
            spawned = _spawn(req, fds)
            reply: dict[str, Any] = {"pid": spawned.pid, "start_time": spawned.start_time}
        except Exception as err:  # noqa: BLE001 - reported to the server
            reply = {"error": str(err)}
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(json.dumps(reply).encode())


RESET_SIGNALS = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))
"""Every signal whose disposition can be set: what a spawned process gets back to its default."""


def _single_threaded() -> bool:
    """This process has one thread (C threads included: a gRPC channel's are not Python's)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _reset_signals() -> None:
    """In a zygote forked from a running server: the loop's signal handlers and wakeup fd are
    not ours; back to what an interpreter starts with (SIGPIPE and SIGXFSZ ignored), as in a
    zygote forked at the server's start."""
    signal.set_wakeup_fd(-1)
    for sig in RESET_SIGNALS:
        try:
            if signal.getsignal(sig) not in (signal.SIG_DFL, signal.SIG_IGN, None, signal.default_int_handler):
                signal.signal(sig, signal.SIG_IGN if sig in (signal.SIGPIPE, signal.SIGXFSZ) else signal.SIG_DFL)
        except (OSError, ValueError):
            pass


def _package_dirs() -> list[str]:
    """The directories holding ``runwasm``'s subpackages (``shim``, ``wasm``, ``oci``, ``linux``):
    the ``__path__`` a fresh ``python -I -S`` gives its ``runwasm`` package, as the shim's
    launcher does (an editable install maps them with an import hook ``-S`` does not load)."""
    import importlib.util

    dirs: list[str] = []
    for sub in ("shim", "wasm", "oci", "linux"):
        spec = importlib.util.find_spec(f"runwasm.{sub}")
        for loc in (spec.submodule_search_locations or []) if spec is not None else []:
            parent = os.path.dirname(loc)
            if parent not in dirs:
                dirs.append(parent)
    return dirs


def _reset_logging() -> None:
    """In a zygote forked from a running server: the server's logging set-up (its handlers, lean
    records without process fields: ``server/logs.py``, errors not raised) is not what a workload
    expects to start from (the Wasm child's formatter prints ``%(process)d``: with the server's
    settings its every line was lost); back to an interpreter's defaults, as in a zygote forked at
    the server's start."""
    import logging

    logging._srcfile = os.path.normcase(logging.addLevelName.__code__.co_filename)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = True
    logging.raiseExceptions = True
    root = logging.getLogger()
    root.handlers.clear()
    root.filters.clear()
    root.setLevel(logging.WARNING)


def exec_main(fd: int, preload: Sequence[str], later: Sequence[str]) -> None:
    """Entry of an exec'd zygote (``Zygote._exec_zygote``): serve on the inherited socket ``fd``."""
    os.closerange(3, fd)  # whatever the server had inheritable: not the zygote's to keep
    os.closerange(fd + 1, 65536)
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    try:
        _zygote_main(sock, preload, later)
    finally:
        os._exit(0)


def _kill_abandoned(reply: bytes) -> None:
    """The spawn was cancelled: SIGKILL the workload the zygote made anyway (the reaper collects it)."""
    try:
        pid = int(json.loads(reply).get("pid", 0))
    except (ValueError, AttributeError):
        return
    if pid > 0:
        log.info("killing workload pid %d of a cancelled spawn", pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Zygote:
    """Server-side handle. ``start()`` before any thread exists; ``spawn()`` from the loop."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._lock = asyncio.Lock()
        self.pid = 0
        # one future per request sent, in order (the zygote answers in order); a cancelled
        # caller's stays, so that its reply is not taken for the next spawn's
        self._waiters: list[asyncio.Future[bytes]] = []
        self._reader: asyncio.AbstractEventLoop | None = None  # the loop the socket is registered with
        self._lazy: tuple[tuple[str, ...], tuple[str, ...]] | None = None  # (preload, later) of a lazy start

    def start(self, preload: Sequence[str] = (), close: Sequence[int] = (), later: Sequence[str] = (),
              *, lazy: bool = False) -> None:
        """Fork the zygote, which imports ``preload`` before it serves any request (not
        wasmtime-py: a workload that needs it imports it, see server_main), then ``later`` one
        module at a time while no request waits (a workload spawned before imports its entry
        itself). ``close``: fds of the server the zygote must not keep (the node socket and its
        lock: a copy would keep the lock held after the server released it).

        ``lazy``: not now, at the first ``spawn`` (a server whose Wasm tasks are all spawned
        natively, ``shim/spawn/native.py``, never has one: ~3.6 MiB less private memory). Then
        the server may run threads (a gRPC channel for an image's Wasm layer, ``to_thread``
        workers), which a fork must not copy: the zygote is forked only while this process has
        a single thread, else exec'd as a fresh interpreter (``_exec_zygote``: ~0.1 s once,
        instead of a fork's ~3 ms); either way it keeps no fd of the server's but its socket and
        fds 0-2."""
        if lazy:
            self._lazy = (tuple(preload), tuple(later))
            return
        self._fork(preload, close, later)

    def _fork(self, preload: Sequence[str], close: Sequence[int], later: Sequence[str], *,
              close_all: bool = False) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            parent.close()
            for fd in close:
                os.close(fd)
            if close_all:  # forked from a running server: nothing of its loop, logging, sockets or FIFOs
                _reset_signals()
                _reset_logging()
                os.closerange(3, child.fileno())
                os.closerange(child.fileno() + 1, 65536)
            try:
                _zygote_main(child, preload, later)
            finally:
                os._exit(0)
        child.close()
        parent.setblocking(False)
        self._sock = parent
        self.pid = pid

    def prestart(self) -> None:
        """Start a lazy zygote now, for a spawn that will probably need it (a Linux container's
        Create, before its rootfs is mounted: the zygote's start overlaps with that); its
        preload then comes after the first request."""
        if self._sock is None and self._lazy is not None:
            try:
                self._start_late("")
            except SpawnError as err:  # only a hint: the spawn tries again and reports
                log.warning("%s", err)

    def _start_late(self, entry: str) -> None:
        """Start the lazy zygote (see ``start``); SpawnError when the kernel refuses (the next
        spawn tries again)."""
        assert self._lazy is not None
        preload, later = self._lazy
        head = entry.partition(":")[0]
        if head not in preload:  # e.g. a Linux init first: its spawn does not wait for the Wasm preload
            preload, later = (), (*preload, *later)
        try:
            if _single_threaded():
                self._fork(preload, (), later, close_all=True)
            else:
                self._exec_zygote(preload, later)
        except OSError as err:
            raise SpawnError(f"failed to start the zygote: {err}") from err
        self._lazy = None

    def _exec_zygote(self, preload: Sequence[str], later: Sequence[str]) -> None:
        """The zygote as a fresh interpreter (this process runs threads): the same ``sys.path``
        and ``runwasm`` package path as this one, the socket its only fd but 0-2."""
        import sys

        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package = _package_dirs()
        code = ("import sys, types\n"
                f"sys.path[:0] = {list(sys.path)!r}\n"
                "m = types.ModuleType('runwasm')\n"
                f"m.__path__ = {list(package)!r}\n"
                "sys.modules['runwasm'] = m\n"
                "from runwasm.shim.spawn.zygote import exec_main\n"
                f"exec_main({child.fileno()}, {tuple(preload)!r}, {tuple(later)!r})\n")
        try:
            pid = os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", "-c", code], dict(os.environ),
                                 file_actions=[(os.POSIX_SPAWN_DUP2, child.fileno(), child.fileno())],
                                 setsigdef=RESET_SIGNALS, setsigmask=())
        except OSError as err:
            parent.close()
            raise SpawnError(f"failed to start the zygote: {err}") from err
        finally:
            child.close()
        parent.setblocking(False)
        self._sock = parent
        self.pid = pid

    async def spawn(self, entry: str, payload: Mapping[str, Any], fds: Mapping[str, int],
                    *, pidns: str | None = None) -> Spawned:
        """Create a workload process; returns its host pid and start time. Raises SpawnError."""
        if self._sock is None and self._lazy is not None:
            self._start_late(entry)
        if self._sock is None:
            raise SpawnError("zygote not started")
        if len(fds) > MAX_FDS:
            raise SpawnError(f"too many fds for one workload: {len(fds)} > {MAX_FDS}")
        req = json.dumps({"entry": entry, "payload": dict(payload), "names": list(fds),
                          "pidns": pidns}).encode()
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", list(fds.values())).tobytes())]
        async with self._lock:  # one request at a time on the socket
            data = await self._exchange(self._sock, req, anc)
        if not data:
            raise SpawnError("zygote exited")
        reply = json.loads(data)
        if "error" in reply:
            raise SpawnError(f"failed to create workload process: {reply['error']}")
        return Spawned(int(reply["pid"]), int(reply["start_time"]))

    def _exchange(self, sock: socket.socket, req: bytes, anc: list[tuple[int, int, bytes]]) -> asyncio.Future[bytes]:
        """Send ``req``; the future gets the reply (b"" if the zygote is gone). The socket stays
        registered with the loop and ``_on_reply`` hands each reply to the oldest waiter, in the
        readability callback: no task, shield, and selector updates per spawn. A caller cancelled
        mid-request (an RPC deadline) cancels its future, which keeps its place: its reply is
        not taken for the next spawn's (which would get another workload's pid), and the
        workload it names is killed."""
        loop = asyncio.get_running_loop()
        try:
            sock.sendmsg([req], anc)
        except OSError as err:
            raise SpawnError(f"zygote unreachable: {err}") from err
        if self._reader is not loop:
            loop.add_reader(sock.fileno(), self._on_reply)
            self._reader = loop
        waiter: asyncio.Future[bytes] = loop.create_future()
        self._waiters.append(waiter)
        return waiter

    def _on_reply(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._stop_reading(SpawnError(f"zygote unreachable: {err}"))
            return
        if not data:  # the zygote is gone: every request waiting gets no reply
            self._stop_reading(None)
            return
        if not self._waiters:
            log.warning("dropped a zygote reply nobody waits for: %r", data[:200])
            return
        waiter = self._waiters.pop(0)
        if waiter.cancelled():
            _kill_abandoned(data)
        else:
            waiter.set_result(data)

    def _stop_reading(self, err: SpawnError | None) -> None:
        """The socket is done (the zygote ended, a read failed, or ``close``): no more replies."""
        if self._reader is not None and not self._reader.is_closed() and self._sock is not None:
            self._reader.remove_reader(self._sock.fileno())
        self._reader = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if waiter.done():
                continue
            if err is None:
                waiter.set_result(b"")
            else:
                waiter.set_exception(err)

    def gone(self) -> bool:
        """True once the zygote process has ended (its end of the socket hung up); False while
        it runs or before ``start``."""
        if self._sock is None:
            return False
        import select

        poller = select.poll()
        poller.register(self._sock, select.POLLRDHUP)
        return any(ev & (select.POLLHUP | select.POLLRDHUP | select.POLLERR) for _fd, ev in poller.poll(0))

    def close(self) -> None:
        if self._sock is not None:
            self._stop_reading(SpawnError("zygote closed"))
            self._sock.close()
            self._sock = None
