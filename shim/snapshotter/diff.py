"""Thin gRPC adapter: ``containerd.services.diff.v1.Diff`` ``Apply`` into runwasm snapshots.

``Apply(diff, mounts, payloads)``: ``mounts`` must be those of a fresh active snapshot of this
snapshotter (containerd's unpacker calls Prepare, then the differ, then Commit). The blob is
streamed from containerd's content store (the daemon's ``--containerd-address``, namespace from
the call's ``containerd-namespace`` metadata), its digest verified at the end; a tar, tar+gzip or
tar+zstd layer is converted in one pass into the snapshot's EROFS image (whiteouts in overlay
form, path traversal refused); a native EROFS layer is checked and copied as is. The reply is
the uncompressed content's descriptor: containerd compares its digest with the image config's
diff ID (``wrong diff id calculated on extraction``). Stream-processor ``payloads`` (encrypted
layers) are refused, not ignored. ``Diff`` (computing a layer from two mounts) is UNIMPLEMENTED.
"""

from __future__ import annotations

import io
import logging

import grpc

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.errors import InvalidArgumentError
from runwasm.oci.snapshotter.store import MountSpec, SnapshotStore
from runwasm.shim.api.services.diff.v1 import diff_pb2 as pb
from runwasm.shim.api.types import descriptor_pb2
from runwasm.shim.common.errors import UnimplementedError
from runwasm.shim.snapshotter.service import guarded

log = logging.getLogger(__name__)
SERVICE = "containerd.services.diff.v1.Diff"
DEFAULT_CONTAINERD = "/run/containerd/containerd.sock"


class DiffService:
    def __init__(self, store: SnapshotStore, containerd_address: str = DEFAULT_CONTAINERD) -> None:
        self.store = store
        self.containerd_address = containerd_address

    def Apply(self, r: pb.ApplyRequest, context: grpc.ServicerContext) -> pb.ApplyResponse:
        from runwasm.shim.server.containerd_api import NAMESPACE_KEY, ChunkReader, ContainerdClient

        if r.payloads:
            raise UnimplementedError(f"failed to apply layer {r.diff.digest!r}: stream processor payloads"
                                     f" {sorted(r.payloads)!r} are not supported by the runwasm differ")
        namespace = dict(context.invocation_metadata()).get(NAMESPACE_KEY, "")
        if not namespace:
            raise InvalidArgumentError(f"failed to apply layer {r.diff.digest!r}: the call carries no"
                                       f" {NAMESPACE_KEY!r} metadata")
        digest = Digest.parse(r.diff.digest)
        kind = mt.layer_kind(r.diff.media_type)
        mounts = [MountSpec(m.type, m.source, tuple(m.options)) for m in r.mounts]
        with ContainerdClient(self.containerd_address, str(namespace)) as client:
            raw = io.BufferedReader(ChunkReader(client.stream(digest)), 1 << 20)
            applied = self.store.apply_layer(mounts, raw, kind, str(digest))
        out_type = mt.EROFS_LAYER if kind.is_erofs else mt.OCI_LAYER_TAR
        log.info("applied %s layer %s as %s", kind.value, digest, applied.diff_id)
        return pb.ApplyResponse(applied=descriptor_pb2.Descriptor(
            media_type=out_type, digest=str(applied.diff_id), size=applied.size))

    def Diff(self, r: pb.DiffRequest, _: grpc.ServicerContext) -> pb.DiffResponse:
        raise UnimplementedError("failed to compute a diff: the runwasm differ only applies layers"
                                 " (configure containerd's walking differ for Diff)")

    def handler(self) -> grpc.GenericRpcHandler:
        ser = lambda m: m.SerializeToString()  # noqa: E731
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Apply": grpc.unary_unary_rpc_method_handler(guarded("Apply", self.Apply),
                                                         request_deserializer=pb.ApplyRequest.FromString,
                                                         response_serializer=ser),
            "Diff": grpc.unary_unary_rpc_method_handler(guarded("Diff", self.Diff),
                                                        request_deserializer=pb.DiffRequest.FromString,
                                                        response_serializer=ser),
        })
