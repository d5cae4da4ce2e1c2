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


@pytest.mark.parametrize(("content", "got"), [
    (b"hello world\n", "got text starting with 'hello world\\n'"),
    (b"", "got an empty file"),
    (b"\x7fELF\x02\x01\x01\x00" + b"\0" * 600, "got data starting with bytes 7f 45 4c 46 02 01 01 00"),
])
def test_not_a_tarball_says_what_was_expected_and_what_arrived(
        tmp_path: Path, stores: tuple[ContentStore, ImageStore], content: bytes, got: str) -> None:
    """Before: only ``truncated header``."""
    store, images = stores
    path = tmp_path / "not.tar"
    path.write_bytes(content)
    with pytest.raises(InvalidArgumentError) as exc:
        import_layout(store, images, path)
    assert str(exc.value) == (f"failed to import {str(path)!r}: expected an OCI image-layout tar archive"
                              f" (plain or gzip; docker save, skopeo, pack-wasm), {got}")
    _empty(store)


def test_truncated_tarball_says_truncated(tmp_path: Path, stores: tuple[ContentStore, ImageStore]) -> None:
    store, images = stores
    full = tmp_path / "full.tar"
    write_image(full, [tar_layer([Entry("a", data=b"x" * 5000)])], name="docker.io/t/trunc:1")
    with tarfile.open(full) as tar:
        biggest = max(tar.getmembers(), key=lambda m: m.size)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(full.read_bytes()[:biggest.offset_data + 100])  # ends inside a member's data
    with pytest.raises(InvalidArgumentError, match=r"truncated or corrupt tar archive"):
        import_layout(store, images, cut)
    _empty(store)


@pytest.mark.parametrize("name", ["demo/busybox:latest", "docker.io/demo/busybox:latest",
                                  "docker.io/demo/busybox", "index.docker.io/demo/busybox:latest"])
def test_an_image_is_found_by_every_spelling_of_its_name(
        tmp_path: Path, stores: tuple[ContentStore, ImageStore], name: str) -> None:
    store, images = stores
    tar = tmp_path / "i.tar"
    write_image(tar, [tar_layer([Entry("a", data=b"x")])], name="demo/busybox:latest")
    [record] = import_layout(store, images, tar)
    assert record.name == "docker.io/demo/busybox:latest"
    assert images.get(name) == record


def test_fixture_images_write_normalised_names(tmp_path: Path) -> None:
    """``ctr images import`` takes ``io.containerd.image.name`` as written: the demo's
    ``demo/busybox:latest`` must be written as containerd's normal form to be runnable by it."""
    import json

    from fixtures.images import write_image as write_fixture_image

    out = write_fixture_image(tmp_path / "b.tar", "demo/busybox:latest", b"", {}, "linux", "amd64")
    with tarfile.open(out) as tar:
        f = tar.extractfile("index.json")
        assert f is not None
        index = json.load(f)
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/demo/busybox:latest"
