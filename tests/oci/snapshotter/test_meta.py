"""The snapshot table's rules (containerd's Snapshotter contract) and its JSON round trip."""

from __future__ import annotations

import pytest

from runwasm.oci.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from runwasm.oci.snapshotter.meta import Kind, SnapshotTable


def _table() -> SnapshotTable:
    t = SnapshotTable()
    t.create("a", "", Kind.ACTIVE, {"x": "1"}, 10)
    t.commit("L1", "a", {"c": "2"}, inodes=5, now_ns=20)
    t.create("b", "L1", Kind.ACTIVE, {}, 30)
    return t


def test_commit_keeps_id_replaces_labels_and_key() -> None:
    t = _table()
    l1 = t.get("L1")
    assert (l1.kind, l1.id, dict(l1.labels), l1.inodes, l1.created_ns, l1.updated_ns) == (
        Kind.COMMITTED, 1, {"c": "2"}, 5, 10, 20)
    with pytest.raises(NotFoundError):
        t.get("a")
    assert [s.key for s in t.chain("b")] == ["L1"]


def test_create_refuses_existing_key_missing_or_uncommitted_parent() -> None:
    t = _table()
    with pytest.raises(AlreadyExistsError):
        t.create("b", "", Kind.ACTIVE, {}, 1)
    with pytest.raises(NotFoundError, match="parent 'nope' does not exist"):
        t.create("c", "nope", Kind.ACTIVE, {}, 1)
    with pytest.raises(InvalidArgumentError, match="not a committed snapshot"):
        t.create("c", "b", Kind.VIEW, {}, 1)
    with pytest.raises(InvalidArgumentError, match="empty key"):
        t.create("", "", Kind.ACTIVE, {}, 1)
    assert "c" not in t.by_key


def test_commit_rules() -> None:
    t = _table()
    t.create("v", "L1", Kind.VIEW, {}, 1)
    with pytest.raises(FailedPreconditionError, match="not active"):
        t.check_commit("x", "v")
    with pytest.raises(AlreadyExistsError):
        t.check_commit("L1", "b")
    with pytest.raises(NotFoundError):
        t.check_commit("x", "missing")


def test_remove_refuses_a_parent() -> None:
    t = _table()
    with pytest.raises(FailedPreconditionError, match=r"parent of \['b'\]"):
        t.remove("L1")
    t.remove("b")
    t.remove("L1")
    assert t.by_key == {}


def test_update_labels_by_mask() -> None:
    t = _table()
    assert dict(t.update("L1", {"n": "1"}, [], 40).labels) == {"n": "1"}
    assert dict(t.update("L1", {"m": "2"}, ["labels.m"], 41).labels) == {"n": "1", "m": "2"}
    assert dict(t.update("L1", {}, ["labels.n"], 42).labels) == {"m": "2"}
    with pytest.raises(InvalidArgumentError, match="cannot update field 'parent'"):
        t.update("L1", {}, ["parent"], 43)
    with pytest.raises(InvalidArgumentError, match="exceed 4096"):
        t.update("L1", {"k": "v" * 5000}, [], 44)


def test_json_round_trip_and_ids_never_reused() -> None:
    t = _table()
    t.remove("b")
    back = SnapshotTable.from_json(t.to_json(), "test")
    assert back.by_key == t.by_key
    assert back.create("n", "", Kind.ACTIVE, {}, 1).id == 3  # 'b' had id 2


def test_bad_json_is_a_clear_error() -> None:
    with pytest.raises(InvalidArgumentError, match="format version 7"):
        SnapshotTable.from_json(b'{"version": 7}', "meta")
    with pytest.raises(InvalidArgumentError, match="failed to load meta"):
        SnapshotTable.from_json(b'{"version": 1, "snapshots": [{}]}', "meta")
