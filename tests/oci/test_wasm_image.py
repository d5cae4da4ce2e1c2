"""``select_wasm_layer`` over the three ``pack_wasm`` flavours, read back through a content store."""

from __future__ import annotations

from pathlib import Path

import pytest

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.errors import NotFoundError
from runwasm.oci.images import ImageStore
from runwasm.oci.layout_import import import_layout
from runwasm.oci.pack import pack_wasm
from runwasm.oci.store import ContentStore
from runwasm.oci.wasm_image import select_wasm_layer
from tests.conftest import built_fixture
from tests.oci.conftest import HELLO_WASM


def _imported(tmp_path: Path, module: Path, fmt: str) -> tuple[ContentStore, object]:
    root = tmp_path / "root"
    store = ContentStore(root)
    pack_wasm(module, tmp_path / f"{fmt}.tar", f"t/x-{fmt}:1", fmt=fmt)
    (rec,) = import_layout(store, ImageStore(root), tmp_path / f"{fmt}.tar")
    return store, rec.target


@pytest.mark.parametrize(("fmt", "flavour"), [("runwasi", "runwasi"), ("artifact", "artifact")])
def test_layer_flavours_select_the_raw_module(tmp_path: Path, wasm_module: Path, fmt: str, flavour: str) -> None:
    store, target = _imported(tmp_path, wasm_module, fmt)
    chosen = select_wasm_layer(store, target)  # type: ignore[arg-type]
    assert chosen is not None
    assert chosen.flavour == flavour
    assert chosen.layer.media_type == mt.WASM_MODULE
    assert chosen.layer.digest == Digest.of_bytes(HELLO_WASM)


def test_component_layer_type_for_components(tmp_path: Path) -> None:
    comp = built_fixture("wasm", "component_run_ok.wasm")
    store, target = _imported(tmp_path, comp, "runwasi")
    chosen = select_wasm_layer(store, target)  # type: ignore[arg-type]
    assert chosen is not None
    assert chosen.layer.media_type == mt.WASM_COMPONENT_LAYER
    assert chosen.layer.digest == Digest.of_bytes(comp.read_bytes())


def test_tar_flavour_has_no_wasm_layer(tmp_path: Path, wasm_module: Path) -> None:
    store, target = _imported(tmp_path, wasm_module, "tar")
    assert select_wasm_layer(store, target) is None  # type: ignore[arg-type]


def test_missing_blob_is_an_error_not_none(tmp_path: Path, wasm_module: Path) -> None:
    store, target = _imported(tmp_path, wasm_module, "runwasi")
    empty = ContentStore(tmp_path / "other")
    with pytest.raises(NotFoundError):
        select_wasm_layer(empty, target)  # type: ignore[arg-type]
