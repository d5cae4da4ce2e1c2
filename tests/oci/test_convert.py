from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures.oci.imagebuild import Entry, tar_layer, write_image
from runwasm.oci import mediatypes as mt
from runwasm.oci.convert import convert_to_erofs
from runwasm.oci.erofs.reader import ErofsImage
from runwasm.oci.gc import collect_garbage
from runwasm.oci.images import ImageStore
from runwasm.oci.layout_import import import_layout
from runwasm.oci.resolve import resolve
from runwasm.oci.store import ContentStore


@pytest.fixture
def stores(tmp_path: Path) -> tuple[ContentStore, ImageStore]:
    write_image(tmp_path / "i.tar", [tar_layer([Entry("etc/os", data=b"one")]),
                                     tar_layer([Entry("etc/os", data=b"two"), Entry("etc/.wh.x")], "zstd")])
    cs = ContentStore(tmp_path / "root")
    images = ImageStore(cs.root)
    import_layout(cs, images, tmp_path / "i.tar")
    return cs, images


@pytest.mark.parametrize("zstd", [False, True])
def test_convert_marks_and_rewrites(stores: tuple[ContentStore, ImageStore], zstd: bool) -> None:
    cs, images = stores
    record = convert_to_erofs(cs, images, "test/img", "test/img:erofs", zstd=zstd)
    assert record.target.platform is not None
    assert record.target.platform.os_features == ("erofs",)
    res = resolve(cs, record.target)
    assert res.config.os_features == ("erofs",)
    want = mt.LayerKind.EROFS_ZSTD if zstd else mt.LayerKind.EROFS
    assert res.layer_kinds == (want, want)
    if not zstd:
        # the diff id is the sha256 of the raw EROFS blob, and the blob is a valid image
        layer = res.manifest.layers[1]
        assert res.config.diff_ids[1] == layer.digest
        with ErofsImage(cs.path(layer.digest)) as im:
            assert im.read_data(im.lookup("/etc/os")) == b"two"


def test_gc_removes_layers_after_rm(stores: tuple[ContentStore, ImageStore]) -> None:
    cs, images = stores
    convert_to_erofs(cs, images, "test/img", "test/img:erofs")
    assert os.listdir(cs.root / "layers")
    with cs.lock():
        images.delete("test/img")
        result = collect_garbage(cs, images)
        assert result.removed_blobs  # the tar layers and old config/manifest
        # the materialisations were keyed by the tar diff ids, which nothing references now
        assert os.listdir(cs.root / "layers") == []
        images.delete("test/img:erofs")
        collect_garbage(cs, images)
    assert cs.list() == []
    assert os.listdir(cs.root / "layers") == []
