"""``runwasm image convert --erofs [--zstd]``: rewrite an image with native EROFS layers.

Like ``ctr image convert --erofs``: each tar layer becomes ``application/vnd.erofs.layer.v1``
(or ``+zstd``), the config's ``rootfs.diff_ids`` become the sha256 of the raw EROFS images,
``erofs`` is appended to ``os.features`` in the config and in the manifest descriptor's
platform. EROFS and Wasm layers are kept as they are. The source image is untouched.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import replace

from runwasm.oci import mediatypes as mt
from runwasm.oci.compression import compress_zstd
from runwasm.oci.digest import Digest
from runwasm.oci.image import Descriptor, Manifest, Platform
from runwasm.oci.images import ImageRecord, ImageStore
from runwasm.oci.jsonparse import dumps_canonical
from runwasm.oci.layers import LayerStore
from runwasm.oci.platforms import DEFAULT_PLATFORMS
from runwasm.oci.reference import Reference
from runwasm.oci.resolve import resolve
from runwasm.oci.store import ContentStore

EROFS_FEATURE = "erofs"


def _sha256_file(path: os.PathLike[str]) -> Digest:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return Digest.from_hasher(h)


def convert_to_erofs(store: ContentStore, images: ImageStore, src: str, dst: str, *, zstd: bool = False,
                     platforms: Sequence[Platform] = DEFAULT_PLATFORMS) -> ImageRecord:
    """Convert image ``src`` into a new image named ``dst`` (replaced if it exists).

    Raises the errors of ``resolve`` and of layer materialisation (digest mismatches etc.).
    """
    record = images.get(src)
    resolved = resolve(store, record.target, platforms)
    layers = LayerStore(store.root)
    new_layers: list[Descriptor] = []
    new_diff_ids: list[Digest] = []
    diff_iter = iter(resolved.config.diff_ids)
    with store.lock():
        for layer in resolved.manifest.layers:
            kind = mt.layer_kind(layer.media_type)
            if kind is mt.LayerKind.WASM and len(resolved.config.diff_ids) < len(resolved.manifest.layers):
                new_layers.append(layer)
                continue
            diff_id = next(diff_iter)
            if not kind.is_tar:
                new_layers.append(layer)
                new_diff_ids.append(diff_id)
                continue
            image = layers.ensure_erofs(store, layer, diff_id)
            raw_digest = _sha256_file(image)
            if zstd:
                with tempfile.TemporaryFile(dir=store.ingest_dir) as tmp, open(image, "rb") as src_fh:
                    compress_zstd(src_fh, tmp)
                    tmp.seek(0)
                    digest, size = store.ingest(tmp)
                media_type = mt.EROFS_LAYER_ZSTD
            else:
                with open(image, "rb") as src_fh:
                    digest, size = store.ingest(src_fh, raw_digest)
                media_type = mt.EROFS_LAYER
            new_layers.append(Descriptor(media_type, digest, size, annotations=dict(layer.annotations)))
            new_diff_ids.append(raw_digest)
        features = tuple(resolved.config.os_features) + (
            () if EROFS_FEATURE in resolved.config.os_features else (EROFS_FEATURE,))
        config = replace(resolved.config, diff_ids=tuple(new_diff_ids), os_features=features)
        config_bytes = dumps_canonical(config.to_json())
        config_desc = Descriptor(mt.OCI_CONFIG, store.put_bytes(config_bytes), len(config_bytes))
        manifest = Manifest(config_desc, tuple(new_layers), mt.OCI_MANIFEST, dict(resolved.manifest.annotations))
        manifest_bytes = dumps_canonical(manifest.to_json())
        name = str(Reference.parse(dst))
        platform = replace(config.platform, os_features=features)
        target = Descriptor(mt.OCI_MANIFEST, store.put_bytes(manifest_bytes), len(manifest_bytes),
                            annotations={mt.ANNOTATION_IMAGE_NAME: name}, platform=platform)
        out = ImageRecord(name, target)
        images.put(out)
    return out
