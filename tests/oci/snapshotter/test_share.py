"""Finding the runwasm snapshotter's committed EROFS layers by chain ID (``oci/snapshotter/share.py``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from runwasm.oci.digest import Digest
from runwasm.oci.errors import NotFoundError
from runwasm.oci.snapshotter.meta import Kind, Snapshot, SnapshotTable
from runwasm.oci.snapshotter.share import SNAPSHOT_REF_LABEL, chain_ids, committed_layers

D1 = Digest.parse("sha256:" + "1" * 64)
D2 = Digest.parse("sha256:" + "2" * 64)


def test_chain_ids_follow_the_image_spec() -> None:
    c2 = "sha256:" + hashlib.sha256(f"{D1} {D2}".encode()).hexdigest()
    assert [str(c) for c in chain_ids([D1, D2])] == [str(D1), c2]
    assert chain_ids([]) == []


def _store(root: Path, snaps: list[Snapshot]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.json").write_bytes(SnapshotTable(snaps).to_json())
    for s in snaps:
        (root / "s" / str(s.id)).mkdir(parents=True)
        (root / "s" / str(s.id) / "layer.erofs").write_bytes(b"x")


def test_committed_layers_by_key_or_label_in_the_namespace_only(tmp_path: Path) -> None:
    c1, c2 = chain_ids([D1, D2])
    _store(tmp_path, [
        Snapshot(f"default/3/{c1}", 1, Kind.COMMITTED),
        Snapshot("default/4/extract-1 x", 2, Kind.COMMITTED, labels={SNAPSHOT_REF_LABEL: str(c2)}),
        Snapshot(f"other/5/{c2}", 3, Kind.COMMITTED),
        Snapshot(f"default/6/{c2}", 4, Kind.ACTIVE),
    ])
    assert committed_layers(tmp_path, "default", [c1, c2]) == {
        c1: tmp_path / "s" / "1" / "layer.erofs", c2: tmp_path / "s" / "2" / "layer.erofs"}
    assert committed_layers(tmp_path, "other", [c1, c2]) == {c2: tmp_path / "s" / "3" / "layer.erofs"}
    assert committed_layers(tmp_path, "nobody", [c1, c2]) == {}


def test_a_directory_that_is_not_a_snapshotter_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"no metadata.json \(is it the snapshotter's --root\?\)"):
        committed_layers(tmp_path, "default", [D1])
