"""The Task service as plain methods: containers, their processes, state and events.

RPC adapters (``shim/server/task_rpc.py``) decode protobuf, call these methods and encode the result;
errors raised here are ShimError subclasses (or other packages' errors with a ``status``) and
are mapped to status codes once, in the adapter. Contracts (shim-protocol.md §9, §11):

- Create builds the container in the *created* state (workload set up, user code not running),
  returns its real pid and publishes TaskCreate. It never raises UnimplementedError.
- Events for one process go out create -> start -> exit -> delete, even for instant exits:
  TaskStart is queued synchronously right after ``start`` is sent, before the loop can run the
  reaper's exit callback.
- Kill of a finished process is NotFound; Delete of a running one is FailedPrecondition.
- A container stays in ``Pids`` until it is deleted (containerd's reload check).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runwasm.linux.errors import NotFoundError as ProcessGoneError
from runwasm.oci import control
from runwasm.oci.runtime_spec import RuntimeSpec, parse_process
from runwasm.shim.common import mounts, rootfs_plan, spanpipe, tracing
from runwasm.shim.common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from runwasm.shim.common.ids import validate_id
from runwasm.shim.common.options import RuntimeOptions
from runwasm.shim.common.options import parse as parse_options
from runwasm.shim.common.statefile import BundleState
from runwasm.shim.server import events_factory as ev
from runwasm.shim.server.backends import Backend, Launch
from runwasm.shim.server.private_rootfs import ROOTNS_FD, PrivateRootfs, mount_private
from runwasm.shim.server.process import Proc
from runwasm.shim.server.reaper import Reaper
from runwasm.shim.server.state import Op, State, transition
from runwasm.shim.server.stdio import StdioPaths, give_to, opened
from runwasm.shim.spawn import native as native_spawn
from runwasm.shim.spawn.zygote import Zygote

if TYPE_CHECKING:
    from runwasm.shim.server.image_module import ImageModule

log = logging.getLogger(__name__)


def _attach(backend: Backend, proc: Proc) -> None:
    """Move a new workload into its container's cgroup. One that is already gone (it reported a
    set-up error on its control channel and exited, e.g. an exec of a file that is no module) is
    left to ``wait_ready``, which raises that error rather than a bare "no such process"."""
    try:
        backend.attach(proc.pid)
    except ProcessGoneError as err:
        log.debug("workload %d exited before it could join its cgroup: %s", proc.pid, err)

Publish = Callable[[object], None]
BackendFactory = Callable[[str, str, RuntimeSpec, Path, Path, RuntimeOptions, "ImageModule | None"], Backend]
ImageModuleLookup = Callable[[str, Path, RuntimeSpec, RuntimeOptions], Awaitable["ImageModule | None"]]
"""(container id, bundle, spec, runtime options) -> the Wasm layer of the container's image, with
its compiled artifact when there is one (``shim/server/image_module.py``)."""


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A Create request, decoded."""

    id: str
    bundle: str
    rootfs: tuple[mounts.MountSpec, ...] = ()
    stdio: StdioPaths = StdioPaths()
    checkpoint: str = ""
    options: tuple[str, bytes] | None = None  # CreateTaskRequest.options (type URL, value)


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How a process ended, as Wait and Delete report it."""

    pid: int
    exit_status: int
    exited_at_ns: int | None


@dataclass(slots=True)
class Container:
    """A container of the Task service: its spec, back-end and processes."""

    id: str
    bundle: Path
    spec: RuntimeSpec
    backend: Backend
    init: Proc
    mounts: list[str]
    state_file: BundleState
    execs: dict[str, Proc] = field(default_factory=dict)
    on_teardown: list[Callable[[], object]] = field(default_factory=list)
    check_oom: Callable[[], None] | None = None
    held_exit: object | None = None  # the init's TaskExit, waiting for its execs' exits
    io_owner: tuple[int | None, int | None] = (None, None)  # runc options IoUid/IoGid
    private: PrivateRootfs | None = None  # an EROFS rootfs in its own mount namespace


def _own_pid_namespace(spec: RuntimeSpec) -> bool:
    """True when the container gets a new pid namespace (a ``pid`` entry without a path), whose
    end takes every process in it along; a Wasm or spec-less container counts as having one."""
    lin = spec.linux
    if lin is None:
        return True
    ns = lin.namespace("pid")
    return ns is not None and not ns.path


def _looks_wasm(spec: RuntimeSpec) -> bool:
    """``native_spawn.looks_wasm`` of the spec's ``process.args``: only a hint for
    ``Zygote.prestart``; the router decides."""
    return native_spawn.looks_wasm(spec.process.args if spec.process is not None else ())


class TaskService:
    def __init__(self, namespace: str, zygote: Zygote, reaper: Reaper, publish: Publish,
                 backend_factory: BackendFactory, defaults: RuntimeOptions | None = None,
                 image_modules: ImageModuleLookup | None = None) -> None:
        self.namespace = namespace
        self._image_modules = image_modules
        self._zygote = zygote
        self._reaper = reaper
        self._publish = publish
        self._backend_factory = backend_factory
        self.defaults = defaults or RuntimeOptions()
        self.containers: dict[str, Container] = {}
        self._creating: set[str] = set()

    @property
    def busy(self) -> bool:
        """Containers are hosted or being created: the server must not exit (Shutdown)."""
        return bool(self.containers or self._creating)

    # --- lookup --------------------------------------------------------------------------------

    def _container(self, cid: str) -> Container:
        c = self.containers.get(cid)
        if c is None:
            raise NotFoundError(f"container {cid!r} not created")
        return c

    def _proc(self, cid: str, exec_id: str) -> tuple[Container, Proc]:
        c = self._container(cid)
        if not exec_id:
            return c, c.init
        p = c.execs.get(exec_id)
        if p is None:
            raise NotFoundError(f"exec {exec_id!r} of container {cid!r} not found")
        return c, p

    # --- spawning ------------------------------------------------------------------------------

    async def _spawn(self, cid: str, exec_id: str, launch: Launch, stdio: StdioPaths,
                     private: PrivateRootfs | None = None) -> Proc:
        ours, theirs = control.socketpair()
        ours.setblocking(False)
        steps_fd = spanpipe.open_pipe(f"{cid} {exec_id}".strip())  # None unless OTEL_* is configured
        try:
            # a workload that makes a pty gets its slave; the server copies the FIFOs. A Wasm task
            # with terminal=true has no pty: it writes to the FIFOs itself.
            with opened(StdioPaths() if launch.pty else stdio) as fds:
                # "log": the server's current stderr, i.e. this group's log FIFO (a zygote forked for
                # an earlier group, e.g. by a standby server, would otherwise log to that group's)
                named = {"control": theirs.fileno(), **fds, "log": 2, **launch.extra_fds}
                if private is not None:
                    named[ROOTNS_FD] = private.ns_fd
                if steps_fd is not None:  # "trace": spans wanted; "steps": the debug log or metrics only
                    named["trace" if tracing.active() else "steps"] = steps_fd
                native = native_spawn.plan(launch.entry, launch.payload, named, pidns=launch.pidns, pty=launch.pty)
                with self._reaper.spawning():  # its exit may be reaped before the watch below
                    if native is not None:  # no zygote: the server made the plan (shim/spawn/native.py)
                        spawned = native_spawn.spawn(native, named)
                    else:
                        spawned = await self._zygote.spawn(launch.entry, launch.payload, named, pidns=launch.pidns)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            if steps_fd is not None:
                os.close(steps_fd)
        return Proc(cid, exec_id, spawned.pid, stdio, ours, start_time=spawned.start_time)

    @staticmethod
    def _require_announced(p: Proc, op: str) -> None:
        """Create/Exec of ``p`` is still awaiting the workload's ``ready``: Start would run user
        code (and publish TaskStart) before TaskCreate/TaskExecAdded, and Delete would tear down
        what Create is still building, so both are refused until it is done."""
        if not p.announced:
            raise FailedPreconditionError(f"{p.what}: cannot {op} while it is still being created")

    def _attach_console(self, p: Proc) -> None:
        if p.pty is not None:
            from runwasm.shim.server.console import Console

            master, p.pty = p.pty, None  # the Console owns it now, also if it fails
            p.console = Console(master, p.stdio)

    def resize_pty(self, cid: str, exec_id: str, width: int, height: int) -> None:
        """Set the window size of the process's pty. A process without one (a Wasm task with
        ``terminal=true`` writes to the stdout FIFO; or no terminal at all) has no window to
        size: a no-op, as in runc's shim, since ``ctr run -t`` sends it after every Start."""
        _c, p = self._proc(cid, exec_id)
        if p.console is None:
            log.debug("%s: resize to %dx%d ignored: no pty", p.what, width, height)
            return
        p.console.resize(width, height)

    def _abort(self, proc: Proc) -> None:
        proc.close_control()  # EOF before start: the workload exits without running user code
        if proc.exited.is_set():
            return  # reaped: the pid may already belong to another process
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # --- RPCs ----------------------------------------------------------------------------------

    async def create(self, req: CreateRequest) -> int:
        validate_id(req.id, "container id")
        if req.id in self.containers or req.id in self._creating:
            raise AlreadyExistsError(f"container {req.id!r} already exists")
        if req.checkpoint:
            raise InvalidArgumentError(f"container {req.id!r}: restore from checkpoint is not supported")
        self._creating.add(req.id)
        try:
            return await self._create(req)
        finally:
            self._creating.discard(req.id)

    async def _create(self, req: CreateRequest) -> int:
        from runwasm.shim.server import router

        bundle = Path(req.bundle)
        parsed = parse_options(req.options, source=f"runtime options of container {req.id!r}")
        opts = self.defaults.merged(parsed.options, parsed.given) if parsed else self.defaults
        spec = RuntimeSpec.load(bundle)
        if not _looks_wasm(spec):  # a hint: a Linux container's zygote starts while its rootfs is mounted
            self._zygote.prestart()
        made: list[str] = []
        private: PrivateRootfs | None = None
        if req.rootfs:
            target = bundle / "rootfs"
            target.mkdir(exist_ok=True)
            if rootfs_plan.needs_private([(m.type, m.source, m.options) for m in req.rootfs]):
                private = self._mount_private(req, spec, bundle, target)
            else:
                made = mounts.mount_rootfs(req.rootfs, str(target))
            rootfs = target
        else:
            root = spec.root.path if spec.root else "rootfs"
            rootfs = Path(root) if os.path.isabs(root) else bundle / root
        view = private.view if private is not None else rootfs  # where the server reads the rootfs
        state = BundleState(id=req.id, mounts=made, verity=list(private.verity) if private else [])

        def release() -> None:
            try:
                mounts.unmount_all(made)
            finally:
                if private is not None:
                    private.close()

        try:
            if made or private is not None:
                # what this server mounted is recorded before anything can fail; with nothing
                # mounted, a `delete` after a server killed before the next save finds no record,
                # which it treats as this one (pid 0, nothing of the kind's to clean)
                state.save(bundle)
            image_module, module = await self._image_module(req.id, spec, bundle, view, opts)
            if image_module is not None:
                route = router.Route("wasm", f"its image has a Wasm {image_module.where}")
            else:
                route = router.route(spec, view, opts.executor, module)
            log.info("container %s routed to %s: %s", req.id, route.kind, route.reason)
            backend = self._backend_factory(route.kind, req.id, spec, bundle, rootfs, opts, image_module)
            if private is not None and hasattr(backend, "rootfs_view"):
                backend.rootfs_view = view
            state.kind = route.kind
            # recorded before plan_init makes the executor's own record (a Wasm task's cgroup):
            # `delete` after a server killed mid-Create cleans that record only for its kind
            state.save(bundle)
        except BaseException:
            release()
            raise
        try:
            launch = backend.plan_init()
            give_to(req.stdio, opts.io_uid, opts.io_gid)
            proc = await self._spawn(req.id, "", launch, req.stdio, private)
        except BaseException:
            try:
                backend.destroy()
            finally:
                release()
            raise
        container = Container(req.id, bundle, spec, backend, proc, made, state,
                              io_owner=(opts.io_uid, opts.io_gid), private=private)
        self.containers[req.id] = container
        self._reaper.watch(proc.pid, proc.start_time,
                           tracing.bind(lambda pid, st, when: self._on_exit(container, proc, st, when)))
        try:
            _attach(backend, proc)
            await proc.wait_ready()
            self._attach_console(proc)
            state.pid, state.pid_start_time = proc.pid, proc.start_time
            state.save(bundle)
        except BaseException:
            self._abort(proc)
            await proc.exited.wait()
            self._teardown(container)
            raise
        proc.announced = True
        self._publish(ev.task_create(req, proc.pid))
        self._watch_oom(container)
        return proc.pid

    def _mount_private(self, req: CreateRequest, spec: RuntimeSpec, bundle: Path, target: Path) -> PrivateRootfs:
        """containerd 2.3's EROFS mount list, mounted in a mount namespace of the container's own
        (``shim/server/private_rootfs.py``); nothing of it appears in the host's mount table."""
        if spec.linux is not None and any(ns.type == "mount" and ns.path for ns in spec.linux.namespaces):
            raise InvalidArgumentError(
                f"container {req.id!r}: its EROFS rootfs is mounted in a private mount namespace, so it cannot "
                "join an existing mount namespace (linux.namespaces type mount with a path)")
        plan = rootfs_plan.plan([(m.type, m.source, m.target, m.options) for m in req.rootfs],
                                str(target), str(bundle / "layers"))
        private = mount_private(plan, req.id)
        log.info("container %s: EROFS rootfs mounted in a private mount namespace (%s)", req.id,
                 ", ".join(private.methods))
        return private

    async def _image_module(self, cid: str, spec: RuntimeSpec, bundle: Path, rootfs: Path,
                            opts: RuntimeOptions) -> tuple[ImageModule | None, Path | None]:
        """The module from the image's Wasm layer, when ``args[0]`` is not in the rootfs (see
        ``shim/server/image_module.py``); None when there is no lookup, the container is routed to Linux,
        or the image has no Wasm layer (then routing reports the missing ``args[0]``). Second: the
        file ``args[0]`` names in the rootfs when it looked and found one (for ``router.route``)."""
        from runwasm.shim.server import router

        forced = spec.annotations.get(router.EXECUTOR_ANNOTATION) or opts.executor
        if self._image_modules is None or forced == "linux":
            return None, None
        module = router.module_file(spec, rootfs)
        if module is not None:
            return None, module  # without importing image_module (the OCI image model: ~5 ms in a fresh server)
        try:
            return await self._image_modules(cid, bundle, spec, opts), None
        except Exception as err:
            from runwasm.shim.common.errors import status_of
            from runwasm.shim.server.image_module import ImageModuleError

            arg0 = spec.process.args[0] if spec.process and spec.process.args else None
            raise ImageModuleError(
                f"cannot run container {cid!r}: process.args[0] {arg0!r} is not a file in its rootfs, and the "
                f"module could not be read from its image in containerd: {err}", status_of(err)) from err

    def _watch_oom(self, c: Container) -> None:
        """Publish TaskOOM as soon as the memory cgroup kills something (before the TaskExit)."""
        try:
            watcher = c.backend.oom_watcher()
        except Exception as err:  # no memory controller: the container runs without OOM events
            log.warning("container %s: OOM events unavailable: %s", c.id, err)
            return
        if watcher is None:
            return
        loop = asyncio.get_running_loop()

        def on_ready() -> None:
            try:
                kills = watcher.read()
            except OSError:
                kills = 0
            if kills:
                log.info("container %s: OOM kill", c.id)
                self._publish(ev.task_oom(c.id))

        loop.add_reader(watcher.fileno(), on_ready)
        c.check_oom = on_ready
        c.on_teardown.append(lambda: (loop.remove_reader(watcher.fileno()), watcher.close()))

    async def start(self, cid: str, exec_id: str) -> int:
        c, p = self._proc(cid, exec_id)
        self._require_announced(p, "start")
        nxt = transition(p.state, Op.START, p.what)
        try:
            p.send_start(c.backend.started if not exec_id else None)
        except control.ControlChannelError as err:  # died before start; the reaper has not run yet
            raise FailedPreconditionError(f"{p.what}: workload exited before start") from err
        p.state = nxt
        # synchronously after sending start: TaskStart is queued before any TaskExit can be
        self._publish(ev.task_exec_started(cid, exec_id, p.pid) if exec_id else ev.task_start(cid, p.pid))
        return p.pid

    def _on_exit(self, c: Container, p: Proc, status: int, when_ns: int) -> None:
        if not p.on_exit(status, when_ns):
            return
        log.info("%s pid %d exited with status %d", p.what, p.pid, status)
        if not p.exec_id:
            c.state_file.exit_status = status
            try:
                c.state_file.save(c.bundle)
            except OSError as err:
                log.warning("failed to record exit of %s in %s: %s", p.what, c.bundle, err)
        if c.check_oom is not None and not p.exec_id:
            c.check_oom()  # an OOM kill is reported before the exit it caused (CRI's OOMKilled)
        if not p.exec_id and not _own_pid_namespace(c.spec):
            # like runc's shim (kill --all when the init exits and the container has no pid
            # namespace of its own): what the init left behind (a forked worker, a daemon) would
            # keep the container's stdio and cgroup, and its stop would never finish
            try:
                c.backend.kill_all(signal.SIGKILL, self._live_pids(c))
            except Exception:
                log.exception("container %s: failed to kill what its init left behind", c.id)
        if not p.announced:
            return
        exit_event = ev.task_exit(c.id, p.exec_id or c.id, p.pid, status, when_ns)
        live_execs = [e.pid for e in c.execs.values() if not e.exited.is_set()]
        if not p.exec_id and live_execs:
            # like runc's shim: the init's TaskExit goes out after its execs' exits, and execs that
            # outlive their init (no pid namespace of their own) are killed
            c.held_exit = exit_event
            try:
                c.backend.kill_all(signal.SIGKILL, live_execs)
            except Exception:
                log.exception("container %s: failed to kill the execs that outlived the init", c.id)
                c.held_exit = None
                self._publish(exit_event)
            return
        self._publish(exit_event)
        if p.exec_id and c.held_exit is not None and not live_execs:
            self._publish(c.held_exit)
            c.held_exit = None

    async def kill(self, cid: str, exec_id: str, sig: int, all_: bool) -> None:
        c, p = self._proc(cid, exec_id)
        transition(p.state, Op.KILL, p.what)
        if p.signal_for(sig) != sig:
            log.info("%s: SIGTERM delivered as signal %d, what its wasi:http server drains on", p.what, p.signal_for(sig))
        if all_ and not exec_id:
            c.backend.kill_all(p.signal_for(sig), self._live_pids(c))
            return
        try:
            os.kill(p.pid, p.signal_for(sig))
        except ProcessLookupError as err:
            raise NotFoundError(f"{p.what}: process already finished") from err

    def _live_pids(self, c: Container) -> list[int]:
        return [q.pid for q in (c.init, *c.execs.values()) if not q.exited.is_set()]

    async def wait(self, cid: str, exec_id: str) -> ExitInfo:
        _c, p = self._proc(cid, exec_id)
        await p.exited.wait()
        return ExitInfo(p.pid, p.exit_status, p.exited_at_ns)

    async def delete(self, cid: str, exec_id: str) -> ExitInfo:
        c, p = self._proc(cid, exec_id)
        self._require_announced(p, "delete")
        if p.state is State.CREATED and not p.exited.is_set():
            self._abort(p)  # deleting a never-started process kills it, as runc does
            await p.exited.wait()
        p.state = transition(p.state, Op.DELETE, p.what)
        info = ExitInfo(p.pid, p.exit_status, p.exited_at_ns)
        if exec_id:
            del c.execs[exec_id]
            return info
        for e in list(c.execs.values()):
            if not e.exited.is_set():
                self._abort(e)
        self._teardown(c)
        self._publish(ev.task_delete(cid, p.pid, p.exit_status, p.exited_at_ns))
        return info

    def _teardown(self, c: Container) -> None:
        if self._release(c):
            try:  # the `delete` action has nothing left to do: the native launcher answers it alone
                c.state_file.mark_released(c.bundle)
            except OSError as err:
                log.debug("could not record the release of %s: %s", c.id, err)

    def _release(self, c: Container) -> bool:
        """Release everything of ``c``; False when something is left for ``delete``."""
        ok = True
        self.containers.pop(c.id, None)
        for q in (c.init, *c.execs.values()):
            if q.console is not None:
                q.console.close()
        for undo in c.on_teardown:
            try:
                undo()
            except Exception:
                ok = False
                log.exception("teardown step of %s failed", c.id)
        try:
            c.backend.destroy()
        except Exception:
            # the container is gone for containerd either way; what is left stays recorded in the
            # bundle, and the `delete` action containerd runs next tries the cleanup again
            ok = False
            log.exception("failed to release the resources of container %s; `delete` will retry", c.id)
        try:
            mounts.unmount_all(c.mounts)
        except OSError:
            ok = False
            log.exception("failed to unmount the rootfs of container %s; `delete` will retry", c.id)
        if c.private is not None:
            if c.private.verity:
                ok = False  # dm-verity devices may stay busy until the last process is gone: delete retries
            c.private.close()
        return ok

    def state(self, cid: str, exec_id: str) -> tuple[Container, Proc]:
        return self._proc(cid, exec_id)

    def pids(self, cid: str) -> list[tuple[int, str]]:
        c = self._container(cid)
        known = {q.pid: q.exec_id for q in (c.init, *c.execs.values())}
        return [(pid, known.get(pid, "")) for pid in c.backend.pids(list(known))]

    async def exec(self, cid: str, exec_id: str, spec_json: bytes, stdio: StdioPaths) -> None:
        c = self._container(cid)
        validate_id(exec_id, "exec id")
        self._require_announced(c.init, "exec into")
        if exec_id in c.execs:
            raise AlreadyExistsError(f"exec {exec_id!r} of container {cid!r} already exists")
        transition(c.init.state, Op.EXEC, c.init.what)
        process = parse_process(spec_json, source=f"exec {exec_id!r}")
        launch = c.backend.plan_exec(exec_id, process, c.init.pid)
        give_to(stdio, *c.io_owner)
        p = await self._spawn(cid, exec_id, launch, stdio, c.private)
        c.execs[exec_id] = p
        self._reaper.watch(p.pid, p.start_time, tracing.bind(lambda pid, st, when: self._on_exit(c, p, st, when)))
        try:
            _attach(c.backend, p)
            await p.wait_ready()
            self._attach_console(p)
        except BaseException:
            self._abort(p)
            c.execs.pop(exec_id, None)
            raise
        p.announced = True
        self._publish(ev.task_exec_added(cid, exec_id))

    def pause(self, cid: str) -> None:
        c = self._container(cid)
        nxt = transition(c.init.state, Op.PAUSE, c.init.what)
        c.backend.pause()
        c.init.state = nxt
        self._publish(ev.task_paused(cid))

    def resume(self, cid: str) -> None:
        c = self._container(cid)
        nxt = transition(c.init.state, Op.RESUME, c.init.what)
        c.backend.resume()
        c.init.state = nxt
        self._publish(ev.task_resumed(cid))

    def update(self, cid: str, resources: bytes) -> None:
        c = self._container(cid)
        transition(c.init.state, Op.UPDATE, c.init.what)
        c.backend.update(resources)

    def stats(self, cid: str) -> tuple[str, bytes]:
        return self._container(cid).backend.stats()

    def close_io(self, cid: str, exec_id: str, stdin: bool) -> None:
        """The workload holds the only server-side copy of its stdin FIFO (the server closed its
        own after the spawn), so containerd closing its writer already gives the process EOF."""
        self._proc(cid, exec_id)
