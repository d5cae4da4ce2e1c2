from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from fixtures.oci.imagebuild import Entry, Layer, tar_layer, write_image
from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.errors import (
    DigestMismatchError,
    InvalidArgumentError,
    NotFoundError,
    UnsupportedMediaTypeError,
)
from runwasm.oci.gc import collect_garbage
from runwasm.oci.image import Platform
from runwasm.oci.images import ImageStore
from runwasm.oci.layout_import import import_layout
from runwasm.oci.pack import pack_wasm
from runwasm.oci.resolve import resolve
from runwasm.oci.store import ContentStore


@pytest.fixture
def stores(tmp_path: Path) -> tuple[ContentStore, ImageStore]:
    root = tmp_path / "root"
    return ContentStore(root), ImageStore(root)


def _empty(store: ContentStore) -> None:
    assert store.list() == []
    assert list(store.ingest_dir.iterdir()) == []


def test_import_linux_image(tmp_path: Path, stores: tuple[ContentStore, ImageStore]) -> None:
    store, images = stores
    layers = [tar_layer([Entry("bin/", "dir", mode=0o755), Entry("bin/sh", data=b"x", mode=0o755)]),
              tar_layer([Entry("etc/hosts", data=b"h")], "zstd"), tar_layer([Entry("a", data=b"a")], "none")]
    write_image(tmp_path / "i.tar", layers)
    seen: list[tuple[int, int]] = []
    (record,) = import_layout(store, images, tmp_path / "i.tar", progress=lambda d, t: seen.append((d, t)))
    assert record.name == "docker.io/test/img:latest"
    assert seen
    res = resolve(store, images.get("test/img").target)
    assert res.layer_kinds == (mt.LayerKind.TAR_GZIP, mt.LayerKind.TAR_ZSTD, mt.LayerKind.TAR)
    assert res.config.platform == Platform("linux", "amd64")


def test_import_wasm_and_rm_gc(tmp_path: Path, wasm_module: Path, stores: tuple[ContentStore, ImageStore]) -> None:
    store, images = stores
    pack_wasm(wasm_module, tmp_path / "w.tar", "hello:v1")
    import_layout(store, images, tmp_path / "w.tar")
    assert len(store.list()) == 3
    with store.lock():
        assert collect_garbage(store, images).removed_blobs == []
        images.delete("hello:v1")
        assert len(collect_garbage(store, images).removed_blobs) == 3
    _empty(store)


def test_platform_mismatch(tmp_path: Path, wasm_module: Path, stores: tuple[ContentStore, ImageStore]) -> None:
    store, images = stores
    pack_wasm(wasm_module, tmp_path / "w.tar", "hello:v1")
    with pytest.raises(NotFoundError, match="wasip1/wasm is not one of linux/amd64"):
        import_layout(store, images, tmp_path / "w.tar", platforms=[Platform("linux", "amd64")])
    _empty(store)
    assert images.list() == []


def test_unknown_layer_type(tmp_path: Path, stores: tuple[ContentStore, ImageStore]) -> None:
    store, images = stores
    write_image(tmp_path / "i.tar", [Layer("application/x-weird", b"zz", Digest.of_bytes(b"zz"))])
    with pytest.raises(UnsupportedMediaTypeError, match="layers\\[0\\]: .*'application/x-weird'"):
        import_layout(store, images, tmp_path / "i.tar")
    _empty(store)


def _rewrite(src: Path, dst: Path, mutate: dict[str, bytes | None]) -> None:
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            if m.name in mutate:
                data = mutate[m.name]
                if data is None:
                    continue
                m.size = len(data)
                tout.addfile(m, io.BytesIO(data))
            else:
                tout.addfile(m, tin.extractfile(m) if m.isfile() else None)


def test_wrong_digest_refused(tmp_path: Path, wasm_module: Path, stores: tuple[ContentStore, ImageStore]) -> None:
    store, images = stores
    packed = pack_wasm(wasm_module, tmp_path / "w.tar", "hello:v1")
    _rewrite(tmp_path / "w.tar", tmp_path / "bad.tar", {f"blobs/sha256/{packed.layer.digest.hex}": b"evil"})
    with pytest.raises(DigestMismatchError, match="digest mismatch"):
        import_layout(store, images, tmp_path / "bad.tar")
    _empty(store)


def test_missing_blob_and_no_index(tmp_path: Path, wasm_module: Path, stores: tuple[ContentStore, ImageStore]) -> None:
    store, images = stores
    packed = pack_wasm(wasm_module, tmp_path / "w.tar", "hello:v1")
    _rewrite(tmp_path / "w.tar", tmp_path / "m.tar", {f"blobs/sha256/{packed.layer.digest.hex}": None})
    with pytest.raises(NotFoundError, match="missing"):
        import_layout(store, images, tmp_path / "m.tar")
    _empty(store)
    _rewrite(tmp_path / "w.tar", tmp_path / "n.tar", {"index.json": None})
    with pytest.raises(InvalidArgumentError, match="no index.json"):
        import_layout(store, images, tmp_path / "n.tar")
    _empty(store)


def test_truncated_tarball(tmp_path: Path, wasm_module: Path, stores: tuple[ContentStore, ImageStore]) -> None:
    store, images = stores
    pack_wasm(wasm_module, tmp_path / "w.tar", "hello:v1")
    data = (tmp_path / "w.tar").read_bytes()
    (tmp_path / "t.tar").write_bytes(data[:1700])
    with pytest.raises(InvalidArgumentError):
        import_layout(store, images, tmp_path / "t.tar")
    _empty(store)
    assert images.list() == []


def test_name_required_without_annotation(tmp_path: Path, stores: tuple[ContentStore, ImageStore]) -> None:
    store, images = stores
    write_image(tmp_path / "i.tar", [tar_layer([Entry("a", data=b"a")])], annotate=False)
    with pytest.raises(InvalidArgumentError, match="pass a name"):
        import_layout(store, images, tmp_path / "i.tar")
    (rec,) = import_layout(store, images, tmp_path / "i.tar", name="mine:1")
    assert rec.name == "docker.io/library/mine:1"
