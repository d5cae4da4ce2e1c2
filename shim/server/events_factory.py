"""Build the containerd.events messages the Task service publishes (shim-protocol.md §11)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from runwasm.shim.api.events import task_pb2 as ev
from runwasm.shim.api.types import mount_pb2

if TYPE_CHECKING:
    from runwasm.shim.server.task import CreateRequest

# Go's zero time.Time, which containerd reads back as "not exited" (§9.3)
GO_ZERO_SECONDS = -62135596800


def timestamp(ns: int | None) -> timestamp_pb2.Timestamp:
    if ns is None:
        return timestamp_pb2.Timestamp(seconds=GO_ZERO_SECONDS, nanos=0)
    return timestamp_pb2.Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def task_create(req: CreateRequest, pid: int) -> ev.TaskCreate:
    return ev.TaskCreate(
        container_id=req.id, bundle=req.bundle,
        rootfs=[mount_pb2.Mount(type=m.type, source=m.source, options=list(m.options)) for m in req.rootfs],
        io=ev.TaskIO(stdin=req.stdio.stdin, stdout=req.stdio.stdout, stderr=req.stdio.stderr,
                     terminal=req.stdio.terminal),
        checkpoint=req.checkpoint, pid=pid)


def task_start(cid: str, pid: int) -> ev.TaskStart:
    return ev.TaskStart(container_id=cid, pid=pid)


def task_exit(cid: str, id_: str, pid: int, status: int, when_ns: int | None) -> ev.TaskExit:
    return ev.TaskExit(container_id=cid, id=id_, pid=pid, exit_status=status, exited_at=timestamp(when_ns))


def task_delete(cid: str, pid: int, status: int, when_ns: int | None) -> ev.TaskDelete:
    return ev.TaskDelete(container_id=cid, pid=pid, exit_status=status, exited_at=timestamp(when_ns))


def task_exec_added(cid: str, exec_id: str) -> ev.TaskExecAdded:
    return ev.TaskExecAdded(container_id=cid, exec_id=exec_id)


def task_exec_started(cid: str, exec_id: str, pid: int) -> ev.TaskExecStarted:
    return ev.TaskExecStarted(container_id=cid, exec_id=exec_id, pid=pid)


def task_paused(cid: str) -> ev.TaskPaused:
    return ev.TaskPaused(container_id=cid)


def task_resumed(cid: str) -> ev.TaskResumed:
    return ev.TaskResumed(container_id=cid)


def task_oom(cid: str) -> ev.TaskOOM:
    return ev.TaskOOM(container_id=cid)
