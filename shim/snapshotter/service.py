"""Thin gRPC adapters: ``containerd.services.snapshots.v1.Snapshots`` over ``SnapshotStore``.

Each handler parses the request into plain values, calls the store once and builds the reply.
Errors are mapped once (``shim.common.errors.to_status``): the store's NotFound, AlreadyExists,
InvalidArgument, FailedPrecondition keep their meaning for containerd's ``errdefs.FromGRPC``
(containerd relies on them: Stat's NotFound, Prepare's AlreadyExists); ENOSPC is
RESOURCE_EXHAUSTED; anything else is UNKNOWN with the message. The ``snapshotter`` field of the
requests names the proxy plugin and is not checked (containerd fills it from its config).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from runwasm.oci.snapshotter.meta import Snapshot
from runwasm.oci.snapshotter.store import MountSpec, SnapshotStore
from runwasm.shim.api.services.snapshots.v1 import snapshots_pb2 as pb
from runwasm.shim.api.types import mount_pb2
from runwasm.shim.common.errors import to_status

log = logging.getLogger(__name__)
SERVICE = "containerd.services.snapshots.v1.Snapshots"
LIST_BATCH = 100


def _code(code: int) -> grpc.StatusCode:
    return next(c for c in grpc.StatusCode if c.value[0] == code)


def mounts_pb(mounts: list[MountSpec]) -> list[mount_pb2.Mount]:
    return [mount_pb2.Mount(type=m.type, source=m.source, options=list(m.options)) for m in mounts]


def _ts(ns: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def info_pb(s: Snapshot) -> pb.Info:
    return pb.Info(name=s.key, parent=s.parent, kind=pb.Kind.Name(int(s.kind)),
                   created_at=_ts(s.created_ns), updated_at=_ts(s.updated_ns), labels=dict(s.labels))


def guarded(name: str, fn: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
    """Run ``fn``; turn any exception into an aborted call with the mapped status."""

    def run(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(request, context)
        except Exception as err:  # noqa: BLE001 - mapped to a status, and logged
            code, message = to_status(err)
            log.warning("%s failed: %s", name, message, exc_info=code == 2)
            context.abort(_code(code), message)

    return run


class SnapshotsService:
    def __init__(self, store: SnapshotStore) -> None:
        self.store = store

    def Prepare(self, r: pb.PrepareSnapshotRequest, _: grpc.ServicerContext) -> pb.PrepareSnapshotResponse:
        return pb.PrepareSnapshotResponse(mounts=mounts_pb(self.store.prepare(r.key, r.parent, dict(r.labels))))

    def View(self, r: pb.ViewSnapshotRequest, _: grpc.ServicerContext) -> pb.ViewSnapshotResponse:
        return pb.ViewSnapshotResponse(mounts=mounts_pb(self.store.view(r.key, r.parent, dict(r.labels))))

    def Mounts(self, r: pb.MountsRequest, _: grpc.ServicerContext) -> pb.MountsResponse:
        return pb.MountsResponse(mounts=mounts_pb(self.store.mounts(r.key)))

    def Commit(self, r: pb.CommitSnapshotRequest, _: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.commit(r.name, r.key, dict(r.labels))
        return empty_pb2.Empty()

    def Remove(self, r: pb.RemoveSnapshotRequest, _: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.remove(r.key)
        return empty_pb2.Empty()

    def Stat(self, r: pb.StatSnapshotRequest, _: grpc.ServicerContext) -> pb.StatSnapshotResponse:
        return pb.StatSnapshotResponse(info=info_pb(self.store.stat(r.key)))

    def Update(self, r: pb.UpdateSnapshotRequest, _: grpc.ServicerContext) -> pb.UpdateSnapshotResponse:
        paths = list(r.update_mask.paths) if r.HasField("update_mask") else []
        snap = self.store.update(r.info.name, dict(r.info.labels), paths)
        return pb.UpdateSnapshotResponse(info=info_pb(snap))

    def List(self, r: pb.ListSnapshotsRequest, _: grpc.ServicerContext) -> Iterator[pb.ListSnapshotsResponse]:
        snaps = self.store.walk(list(r.filters))  # errors raised before the first message
        for i in range(0, len(snaps), LIST_BATCH):
            yield pb.ListSnapshotsResponse(info=[info_pb(s) for s in snaps[i:i + LIST_BATCH]])

    def Usage(self, r: pb.UsageRequest, _: grpc.ServicerContext) -> pb.UsageResponse:
        u = self.store.usage(r.key)
        return pb.UsageResponse(size=u.size, inodes=u.inodes)

    def Cleanup(self, r: pb.CleanupRequest, _: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.cleanup()
        return empty_pb2.Empty()

    def handler(self) -> grpc.GenericRpcHandler:
        unary: dict[str, tuple[Any, Any]] = {
            "Prepare": (pb.PrepareSnapshotRequest, pb.PrepareSnapshotResponse),
            "View": (pb.ViewSnapshotRequest, pb.ViewSnapshotResponse),
            "Mounts": (pb.MountsRequest, pb.MountsResponse),
            "Commit": (pb.CommitSnapshotRequest, empty_pb2.Empty),
            "Remove": (pb.RemoveSnapshotRequest, empty_pb2.Empty),
            "Stat": (pb.StatSnapshotRequest, pb.StatSnapshotResponse),
            "Update": (pb.UpdateSnapshotRequest, pb.UpdateSnapshotResponse),
            "Usage": (pb.UsageRequest, pb.UsageResponse),
            "Cleanup": (pb.CleanupRequest, empty_pb2.Empty),
        }
        methods: dict[str, grpc.RpcMethodHandler] = {
            name: grpc.unary_unary_rpc_method_handler(
                guarded(name, getattr(self, name)), request_deserializer=req.FromString,
                response_serializer=lambda m: m.SerializeToString())
            for name, (req, _resp) in unary.items()
        }
        methods["List"] = grpc.unary_stream_rpc_method_handler(
            self._list_guarded, request_deserializer=pb.ListSnapshotsRequest.FromString,
            response_serializer=lambda m: m.SerializeToString())
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    def _list_guarded(self, r: pb.ListSnapshotsRequest, context: grpc.ServicerContext
                      ) -> Iterator[pb.ListSnapshotsResponse]:
        try:
            batches = list(self.List(r, context))
        except Exception as err:  # noqa: BLE001 - mapped to a status, and logged
            code, message = to_status(err)
            log.warning("List failed: %s", message)
            context.abort(_code(code), message)
        yield from batches
