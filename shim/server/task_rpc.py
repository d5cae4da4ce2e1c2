"""Thin ttrpc adapters over ``TaskService``: decode, call, encode; errors mapped once here.

The same handler table is registered under ``containerd.task.v2.Task`` and
``containerd.task.v3.Task`` (identical messages, shim-protocol.md §9). Every RPC the service
cannot do answers Unimplemented, except Create, which never does (containerd would retry it on
the v2 service).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import DecodeError, Message

from runwasm.oci.spec_reader import SIGNAL_MAX
from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
from runwasm.shim.api.types.task import task_pb2
from runwasm.shim.common import wire
from runwasm.shim.common.errors import UNKNOWN, InvalidArgumentError, UnimplementedError, to_status
from runwasm.shim.common.mounts import MountSpec
from runwasm.shim.common.tracing import rpc_span
from runwasm.shim.common.version import VERSION
from runwasm.shim.server import events_factory as ev
from runwasm.shim.server import otel_metrics
from runwasm.shim.server.stdio import StdioPaths
from runwasm.shim.server.task import CreateRequest, TaskService
from runwasm.shim.ttrpc.server import Handler, RequestContext
from runwasm.shim.ttrpc.status import Code, RpcError

log = logging.getLogger(__name__)

SERVICES = ("containerd.task.v2.Task", "containerd.task.v3.Task")
EMPTY = b""


class TaskRpc:
    def __init__(self, service: TaskService, on_shutdown: Callable[[], None]) -> None:
        self.s = service
        self._on_shutdown = on_shutdown

    async def Create(self, r: pb.CreateTaskRequest) -> Message:
        req = CreateRequest(
            id=r.id, bundle=r.bundle,
            rootfs=tuple(MountSpec(m.type, m.source, tuple(m.options), m.target) for m in r.rootfs),
            stdio=StdioPaths(r.stdin, r.stdout, r.stderr, r.terminal), checkpoint=r.checkpoint,
            options=(r.options.type_url, r.options.value) if r.HasField("options") else None)
        return pb.CreateTaskResponse(pid=await self.s.create(req))

    async def Start(self, r: pb.StartRequest) -> Message:
        return pb.StartResponse(pid=await self.s.start(r.id, r.exec_id))

    async def Delete(self, r: pb.DeleteRequest) -> Message:
        info = await self.s.delete(r.id, r.exec_id)
        return pb.DeleteResponse(pid=info.pid, exit_status=info.exit_status, exited_at=ev.timestamp(info.exited_at_ns))

    async def Kill(self, r: pb.KillRequest) -> Message:
        if not 0 <= r.signal <= SIGNAL_MAX:  # 0 probes, like kill(2); os.kill raises ValueError above
            raise InvalidArgumentError(f"failed to kill {r.id!r}{f' exec {r.exec_id!r}' if r.exec_id else ''}: "
                                       f"signal {r.signal} is not a signal number (expected 0..{SIGNAL_MAX})")
        await self.s.kill(r.id, r.exec_id, r.signal, r.all)
        return empty_pb2.Empty()

    async def Wait(self, r: pb.WaitRequest) -> Message:
        info = await self.s.wait(r.id, r.exec_id)
        return pb.WaitResponse(exit_status=info.exit_status, exited_at=ev.timestamp(info.exited_at_ns))

    async def State(self, r: pb.StateRequest) -> Message:
        c, p = self.s.state(r.id, r.exec_id)
        return pb.StateResponse(
            id=r.exec_id or r.id, bundle=str(c.bundle), pid=p.pid, status=int(p.state),  # type: ignore[arg-type]
            stdin=p.stdio.stdin, stdout=p.stdio.stdout, stderr=p.stdio.stderr, terminal=p.stdio.terminal,
            exit_status=p.exit_status, exited_at=ev.timestamp(p.exited_at_ns), exec_id=r.exec_id)

    async def Pids(self, r: pb.PidsRequest) -> Message:
        procs = []
        for pid, exec_id in self.s.pids(r.id):
            info = None
            if exec_id:  # containerd.runc.v1.ProcessDetails{exec_id = 1}
                info = any_pb2.Any(type_url="containerd.runc.v1.ProcessDetails", value=wire.enc_str(1, exec_id))
            procs.append(task_pb2.ProcessInfo(pid=pid, info=info))
        return pb.PidsResponse(processes=procs)

    async def Connect(self, r: pb.ConnectRequest) -> Message:
        task_pid = 0
        c = self.s.containers.get(r.id)
        if c is not None:
            task_pid = c.init.pid
        return pb.ConnectResponse(shim_pid=os.getpid(), task_pid=task_pid, version=VERSION)

    async def Shutdown(self, r: pb.ShutdownRequest) -> Message:
        if not self.s.busy:
            self._on_shutdown()
        return empty_pb2.Empty()

    async def Exec(self, r: pb.ExecProcessRequest) -> Message:
        await self.s.exec(r.id, r.exec_id, r.spec.value, StdioPaths(r.stdin, r.stdout, r.stderr, r.terminal))
        return empty_pb2.Empty()

    async def Pause(self, r: pb.PauseRequest) -> Message:
        self.s.pause(r.id)
        return empty_pb2.Empty()

    async def Resume(self, r: pb.ResumeRequest) -> Message:
        self.s.resume(r.id)
        return empty_pb2.Empty()

    async def Update(self, r: pb.UpdateTaskRequest) -> Message:
        self.s.update(r.id, r.resources.value)
        return empty_pb2.Empty()

    async def Stats(self, r: pb.StatsRequest) -> Message:
        type_url, value = self.s.stats(r.id)
        return pb.StatsResponse(stats=any_pb2.Any(type_url=type_url, value=value))

    async def CloseIO(self, r: pb.CloseIORequest) -> Message:
        self.s.close_io(r.id, r.exec_id, r.stdin)
        return empty_pb2.Empty()

    async def ResizePty(self, r: pb.ResizePtyRequest) -> Message:
        self.s.resize_pty(r.id, r.exec_id, r.width, r.height)
        return empty_pb2.Empty()

    async def Checkpoint(self, r: pb.CheckpointTaskRequest) -> Message:
        raise UnimplementedError("checkpoint is not supported by runwasm")


def _describe(method: str, req: Any) -> str:
    """What ``-debug`` logs about a request: the fields an operator needs, not the payload."""
    if method == "Create":
        mounts = "; ".join(f"{m.type}:{m.source} [{','.join(m.options)}]" for m in req.rootfs) or "none"
        return (f"bundle={req.bundle} rootfs=({mounts}) terminal={req.terminal} stdin={req.stdin!r} "
                f"stdout={req.stdout!r} stderr={req.stderr!r} options={req.options.type_url or 'none'}")
    if method == "Kill":
        return f"exec_id={req.exec_id!r} signal={req.signal} all={req.all}"
    if method == "Exec":
        return f"exec_id={req.exec_id!r} terminal={req.terminal} spec={req.spec.type_url}"
    exec_id: str = getattr(req, "exec_id", "")
    return f"exec_id={exec_id!r}" if exec_id else ""


def _record(rpc: TaskRpc, method: str, req: Any, began_ns: int) -> None:
    """Task metrics after a successful call (no-ops unless OTEL_* configures metrics)."""
    if not otel_metrics.active() or str(getattr(req, "exec_id", "")):
        return
    c = rpc.s.containers.get(getattr(req, "id", ""))
    kind = (c.state_file.kind or "") if c is not None else ""
    if method == "Create" and c is not None:
        otel_metrics.task_created(req.id, kind, began_ns)
    elif method == "Start" and c is not None:
        otel_metrics.task_started(req.id, kind)


def _adapter(rpc: TaskRpc, method: str, in_cls: type[Message], namespace: str) -> Handler:
    impl: Callable[[Any], Awaitable[Message]] = getattr(rpc, method)

    async def handle(payload: bytes, ctx: RequestContext) -> bytes:
        began = time.monotonic_ns()
        req: Any = None
        try:
            req = in_cls.FromString(payload)
        except DecodeError as err:
            bad = RpcError(Code.INVALID_ARGUMENT, f"failed to decode {in_cls.DESCRIPTOR.full_name}: {err}")
        cid, exec_id = getattr(req, "id", ""), getattr(req, "exec_id", "")
        code_name = "OK"
        with rpc_span(ctx.service, method, ctx.metadata, cid, namespace, exec_id) as span:
            if req is None:
                span.fail(bad.code, bad.code.name, bad.message)
                log.warning("%s failed: code=%s: %s", method, bad.code.name, bad.message)
                raise bad
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s %s %s", method, cid, _describe(method, req))
            kind = ""
            if method == "Delete" and not exec_id and (c := rpc.s.containers.get(cid)) is not None:
                kind = c.state_file.kind or ""
            try:
                reply = (await impl(req)).SerializeToString()
                _record(rpc, method, req, began)
                if kind:
                    otel_metrics.task_deleted(cid, kind)
                return reply
            except Exception as err:
                code: int
                if isinstance(err, RpcError):
                    code, message = int(err.code), err.message
                else:
                    code, message = to_status(err)
                    if method == "Create" and code == Code.UNIMPLEMENTED:
                        code, message = to_status(InvalidArgumentError(str(err)))
                code_name = Code(code).name
                span.fail(code, code_name, message)
                if code == UNKNOWN:
                    log.error("%s %s failed: code=%s", method, cid, code_name, exc_info=err)
                else:
                    log.warning("%s %s failed: code=%s: %s", method, cid, code_name, message)
                if isinstance(err, RpcError):
                    raise
                raise RpcError(Code(code), message) from err
            finally:
                otel_metrics.rpc_duration(ctx.service, method, (time.monotonic_ns() - began) / 1e9, code_name)

    return handle


def handlers(rpc: TaskRpc, namespace: str) -> dict[tuple[str, str], Handler]:
    table: dict[tuple[str, str], Handler] = {}
    desc = pb.DESCRIPTOR.services_by_name["Task"]
    for m in desc.methods:
        if not hasattr(rpc, m.name):
            continue  # answered Unimplemented by the server: "method <name>"
        in_cls = getattr(pb, m.input_type.name)
        for service in SERVICES:
            table[(service, m.name)] = _adapter(rpc, m.name, in_cls, namespace)
    return table
