from __future__ import annotations

import io
from pathlib import Path

import pytest

from runwasm.oci.digest import Digest
from runwasm.oci.errors import DigestMismatchError, NotFoundError
from runwasm.oci.store import ContentStore


def test_ingest_verifies_and_publishes(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    data = b"hello world"
    digest, size = store.ingest(io.BytesIO(data), Digest.of_bytes(data), len(data))
    assert (digest, size) == (Digest.of_bytes(data), 11)
    assert store.read_bytes(digest) == data
    assert store.list() == [digest]
    assert list(store.ingest_dir.iterdir()) == []


@pytest.mark.parametrize(("expected", "size", "needle"), [
    (Digest.of_bytes(b"other"), None, "digest mismatch"),
    (None, 5, "size mismatch: expected 5 bytes, got 11\\+"),
    (None, 100, "size mismatch: expected 100 bytes, got 11"),
])
def test_ingest_mismatch_leaves_nothing(tmp_path: Path, expected: Digest | None, size: int | None,
                                        needle: str) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(DigestMismatchError, match=needle):
        store.ingest(io.BytesIO(b"hello world"), expected, size)
    assert store.list() == []
    assert list(store.ingest_dir.iterdir()) == []


def test_read_detects_corruption(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = store.put_bytes(b"abc")
    path = store.path(digest)
    path.chmod(0o644)
    path.write_bytes(b"abd")
    with pytest.raises(DigestMismatchError, match="content hashes to"):
        store.read_bytes(digest)


def test_missing_blob(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(NotFoundError, match="not found"):
        store.open(Digest.of_bytes(b"x"))
    with pytest.raises(NotFoundError):
        store.delete(Digest.of_bytes(b"x"))


def test_clean_ingest_removes_crash_leftovers(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    (store.ingest_dir / "deadbeef").write_bytes(b"half a blob")
    with store.lock():
        assert store.clean_ingest() == 1
    assert store.list() == []
