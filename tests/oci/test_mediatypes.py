from __future__ import annotations

import pytest

from runwasm.oci import mediatypes as mt
from runwasm.oci.errors import UnsupportedMediaTypeError


@pytest.mark.parametrize(("media_type", "kind"), [
    (mt.OCI_LAYER_TAR, mt.LayerKind.TAR),
    (mt.DOCKER_LAYER_GZIP, mt.LayerKind.TAR_GZIP),
    (mt.OCI_LAYER_TAR_ZSTD, mt.LayerKind.TAR_ZSTD),
    (mt.EROFS_LAYER, mt.LayerKind.EROFS),
    (mt.EROFS_LAYER_ZSTD, mt.LayerKind.EROFS_ZSTD),
    (mt.WASM_MODULE, mt.LayerKind.WASM),
    (mt.WASM_COMPONENT_LAYER, mt.LayerKind.WASM),
])
def test_layer_kind(media_type: str, kind: mt.LayerKind) -> None:
    assert mt.layer_kind(media_type) is kind


def test_unknown_and_bad_erofs_suffix() -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="'application/x-foo'"):
        mt.layer_kind("application/x-foo")
    with pytest.raises(UnsupportedMediaTypeError, match="unsupported erofs layer suffix"):
        mt.layer_kind("application/vnd.erofs.layer.v1+gzip")


def test_canonical() -> None:
    assert mt.canonical(mt.DOCKER_MANIFEST) == mt.OCI_MANIFEST
    assert mt.canonical(mt.OCI_MANIFEST) == mt.OCI_MANIFEST
