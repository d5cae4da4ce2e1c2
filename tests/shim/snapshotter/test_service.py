"""The Snapshots gRPC adapter through a real grpc server on a unix socket (the daemon's
``serve``): containerd's status codes, the List stream, Commit and Usage."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, field_mask_pb2

from runwasm.shim.api.services.diff.v1 import diff_pb2
from runwasm.shim.api.services.snapshots.v1 import snapshots_pb2 as pb
from runwasm.shim.snapshotter.daemon import serve

S = "/containerd.services.snapshots.v1.Snapshots/"


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[grpc.Channel]:
    ready, stop = threading.Event(), threading.Event()
    sock = tmp_path / "s.sock"
    t = threading.Thread(target=serve, args=(tmp_path / "root", sock), kwargs={"ready": ready, "stop": stop})
    t.start()
    assert ready.wait(30)
    ch = grpc.insecure_channel(f"unix:{sock}")
    try:
        yield ch
    finally:
        ch.close()
        stop.set()
        t.join(30)
    assert not sock.exists(), "the socket is removed on stop"


def _call(ch: grpc.Channel, method: str, req: Any, resp: Any) -> Any:
    return ch.unary_unary(S + method, request_serializer=lambda m: m.SerializeToString(),
                          response_deserializer=resp.FromString)(req, timeout=30)


def test_lifecycle_and_codes(channel: grpc.Channel) -> None:
    r = _call(channel, "Prepare", pb.PrepareSnapshotRequest(key="a", labels={"x": "1"}), pb.PrepareSnapshotResponse)
    assert [(m.type, list(m.options)) for m in r.mounts] == [("bind", ["rw", "rbind"])]
    Path(r.mounts[0].source, "f").write_text("hi")
    with pytest.raises(grpc.RpcError) as e:
        _call(channel, "Prepare", pb.PrepareSnapshotRequest(key="a"), pb.PrepareSnapshotResponse)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as e:
        _call(channel, "Stat", pb.StatSnapshotRequest(key="nope"), pb.StatSnapshotResponse)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'nope'" in (e.value.details() or "")
    _call(channel, "Commit", pb.CommitSnapshotRequest(name="L", key="a"), empty_pb2.Empty)
    info = _call(channel, "Stat", pb.StatSnapshotRequest(key="L"), pb.StatSnapshotResponse).info
    assert (info.name, info.kind, dict(info.labels)) == ("L", pb.COMMITTED, {})
    upd = _call(channel, "Update", pb.UpdateSnapshotRequest(
        info=pb.Info(name="L", labels={"k": "v"}), update_mask=field_mask_pb2.FieldMask(paths=["labels.k"])),
        pb.UpdateSnapshotResponse)
    assert dict(upd.info.labels) == {"k": "v"}
    u = _call(channel, "Usage", pb.UsageRequest(key="L"), pb.UsageResponse)
    assert u.size > 0
    assert u.inodes == 2
    lst = channel.unary_stream(S + "List", request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=pb.ListSnapshotsResponse.FromString)
    assert [i.name for batch in lst(pb.ListSnapshotsRequest(filters=["kind==committed"]), timeout=30)
            for i in batch.info] == ["L"]
    with pytest.raises(grpc.RpcError) as e:
        list(lst(pb.ListSnapshotsRequest(filters=["bogus==1"]), timeout=30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _call(channel, "Remove", pb.RemoveSnapshotRequest(key="L"), empty_pb2.Empty)
    _call(channel, "Cleanup", pb.CleanupRequest(), empty_pb2.Empty)


def test_diff_refuses_what_it_cannot_do(channel: grpc.Channel) -> None:
    diff = channel.unary_unary("/containerd.services.diff.v1.Diff/Diff",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=diff_pb2.DiffResponse.FromString)
    with pytest.raises(grpc.RpcError) as e:
        diff(diff_pb2.DiffRequest(), timeout=30)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    apply = channel.unary_unary("/containerd.services.diff.v1.Diff/Apply",
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=diff_pb2.ApplyResponse.FromString)
    with pytest.raises(grpc.RpcError) as e:  # no containerd-namespace metadata
        apply(diff_pb2.ApplyRequest(), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "containerd-namespace" in (e.value.details() or "")
