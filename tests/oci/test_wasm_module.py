from __future__ import annotations

from pathlib import Path

import pytest

from runwasm.oci.convert import convert_to_erofs
from runwasm.oci.errors import NotFoundError
from runwasm.oci.images import ImageStore
from runwasm.oci.layout_import import import_layout
from runwasm.oci.pack import pack_wasm
from runwasm.oci.store import ContentStore
from runwasm.oci.wasm_module import module_bytes
from tests.oci.conftest import HELLO_WASM


def test_module_from_tar_and_erofs_layers(tmp_path: Path, wasm_module: Path) -> None:
    pack_wasm(wasm_module, tmp_path / "w.tar", "hello:v1")
    store = ContentStore(tmp_path / "root")
    images = ImageStore(store.root)
    import_layout(store, images, tmp_path / "w.tar")
    where, data = module_bytes(store, images.get("hello:v1").target)
    assert data == HELLO_WASM
    assert where.startswith("/hello.wasm in layer")
    converted = convert_to_erofs(store, images, "hello:v1", "hello:erofs")
    assert module_bytes(store, converted.target)[1] == HELLO_WASM
    with pytest.raises(NotFoundError, match="'/nope.wasm'"):
        module_bytes(store, converted.target, "/nope.wasm")
