"""Import OCI image-layout tarballs (``docker save`` >= 25, ``skopeo copy oci-archive:``,
``pack-wasm``) into the content store and name the images they contain.

Legacy ``docker save`` (< 25) / ``skopeo copy docker-archive:`` tarballs (only ``manifest.json``,
no ``index.json``) are refused with an error that says how to convert them.

Contract: every ``blobs/sha256/<hex>`` member is streamed into the store and verified against
its name; then each ``index.json`` entry is resolved for the wanted platforms (blobs of other
platforms may be absent) and its layers checked for presence, size and media type. Only then
are image records written. On any error, blobs this import added are removed again and no
record is written. The tarball is never extracted to disk.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.errors import DigestMismatchError, InvalidArgumentError, NotFoundError, OciError
from runwasm.oci.image import Descriptor, Index, Manifest, Platform
from runwasm.oci.images import ImageRecord, ImageStore
from runwasm.oci.jsonparse import loads_object, opt_str
from runwasm.oci.platforms import DEFAULT_PLATFORMS
from runwasm.oci.reference import Reference
from runwasm.oci.resolve import resolve
from runwasm.oci.store import ContentStore

log = logging.getLogger(__name__)
MAX_META = 4 << 20
Progress = Callable[[int, int], None]
Verify = Callable[[list[ImageRecord]], None]
SIG_TAG_SUFFIX = ".sig"


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _image_name(desc: Descriptor, override: str | None, index_len: int) -> str:
    if override:
        ref = Reference.parse(override)
        if index_len > 1 and desc.annotations.get(mt.ANNOTATION_REF_NAME):
            tag = desc.annotations[mt.ANNOTATION_REF_NAME]
            if "/" not in tag and ":" not in tag:
                return str(Reference.parse(f"{ref.name}:{tag}"))
        return str(ref)
    full = desc.annotations.get(mt.ANNOTATION_IMAGE_NAME)
    if full:
        return str(Reference.parse(full))
    ref_name = desc.annotations.get(mt.ANNOTATION_REF_NAME, "")
    if "/" in ref_name or ":" in ref_name:
        return str(Reference.parse(ref_name))
    raise InvalidArgumentError(
        f"failed to name image {str(desc.digest)!r}: index.json has no {mt.ANNOTATION_IMAGE_NAME!r}"
        f" and {mt.ANNOTATION_REF_NAME}={ref_name!r} is not a full reference; pass a name")


def import_layout(store: ContentStore, images: ImageStore, tar_path: Path, *, name: str | None = None,
                  platforms: Sequence[Platform] = DEFAULT_PLATFORMS,
                  progress: Progress | None = None, verify: Verify | None = None) -> list[ImageRecord]:
    """Import a layout tarball (plain, gzip or zstd-less compressed via tarfile's ``r:*``).

    Args:
        name: image name to use instead of the index annotations (with several images, a
            plain ``ref.name`` tag is appended to it).
        platforms: accepted platforms, in preference order.
        progress: called with (bytes read, total bytes) while blobs stream in.
        verify: called with every record about to be written (images and cosign ``.sig``
            signature images, whose blobs are then in the store) before any is written; it
            raises (e.g. ``VerificationError``) to refuse the import, which is then undone.

    Returns:
        The image records written.

    Raises:
        InvalidArgumentError: not a layout, bad JSON, bad names, unsafe member names.
        DigestMismatchError: a blob does not hash to its name.
        NotFoundError: a referenced blob is missing, or no platform matches.
        UnsupportedMediaTypeError: a layer type runwasm cannot apply.
    """
    added: list[Digest] = []
    try:
        total = tar_path.stat().st_size
    except FileNotFoundError as err:
        raise NotFoundError(f"failed to import {str(tar_path)!r}: file not found") from err
    with store.lock():
        try:
            return _import_locked(store, images, tar_path, total, name, platforms, progress, added, verify)
        except (OciError, tarfile.TarError, EOFError, OSError) as err:
            for d in added:
                store.path(d).unlink(missing_ok=True)
            if isinstance(err, OciError):
                raise
            raise InvalidArgumentError(f"failed to import {str(tar_path)!r}: {err}") from err


def _import_locked(store: ContentStore, images: ImageStore, tar_path: Path, total: int, name: str | None,
                   platforms: Sequence[Platform], progress: Progress | None,
                   added: list[Digest], verify: Verify | None = None) -> list[ImageRecord]:
    meta: dict[str, bytes] = {}
    with open(tar_path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
        for member in tar:
            mname = _member_name(member.name)
            if mname.startswith("/") or ".." in mname.split("/"):
                raise InvalidArgumentError(f"failed to import {str(tar_path)!r}: unsafe member name {member.name!r}")
            if mname in ("index.json", "oci-layout", "manifest.json") and member.isfile():
                if member.size > MAX_META:
                    raise InvalidArgumentError(f"failed to import {str(tar_path)!r}: {mname} is {member.size} bytes")
                fh = tar.extractfile(member)
                assert fh is not None
                meta[mname] = fh.read()
                continue
            parts = mname.split("/")
            if len(parts) == 3 and parts[0] == "blobs" and member.isfile():
                digest = Digest.parse(f"{parts[1]}:{parts[2]}")
                existed = store.has(digest)
                fh = tar.extractfile(member)
                assert fh is not None
                try:
                    store.ingest(fh, digest, member.size)
                except DigestMismatchError as err:
                    raise DigestMismatchError(f"failed to import {str(tar_path)!r}: member {mname!r}: {err}") from err
                if not existed:
                    added.append(digest)
                if progress is not None:
                    progress(raw.tell(), total)
            elif not member.isdir():
                log.debug("import %s: ignoring member %r", tar_path, member.name)
    if "index.json" not in meta:
        hint = (" (it has only manifest.json: a legacy 'docker save' / skopeo docker-archive tarball, which"
                " runwasm does not import; re-save it with docker >= 25 or convert it with"
                " 'skopeo copy docker-archive:FILE oci-archive:OUT.tar')") if "manifest.json" in meta else ""
        raise InvalidArgumentError(f"failed to import {str(tar_path)!r}: not an OCI image layout: no index.json{hint}")
    if "oci-layout" in meta:
        version = opt_str(loads_object(meta["oci-layout"]), "imageLayoutVersion", "oci-layout")
        if version != mt.OCI_LAYOUT_VERSION:
            raise InvalidArgumentError(f"failed to import {str(tar_path)!r}: imageLayoutVersion {version!r}")
    index = Index.from_json(meta["index.json"], "index.json")
    if not index.manifests:
        raise InvalidArgumentError(f"failed to import {str(tar_path)!r}: index.json lists no images")
    records = []
    for desc in index.manifests:
        if not store.has(desc.digest):
            raise NotFoundError(f"failed to import {str(tar_path)!r}: blob {str(desc.digest)!r} missing from the tarball")
        if _is_signature_entry(desc):  # a cosign signature image: no platform, no filesystem layers
            _check_blobs(store, desc, tar_path)
            records.append(ImageRecord(_image_name(desc, name, len(index.manifests)), desc))
            continue
        resolved = resolve(store, desc, platforms)
        for layer in resolved.manifest.layers:
            if not store.has(layer.digest):
                raise NotFoundError(f"failed to import {str(tar_path)!r}: layer {str(layer.digest)!r} missing")
            if store.size(layer.digest) != layer.size:
                raise DigestMismatchError(f"failed to import {str(tar_path)!r}: layer {str(layer.digest)!r}"
                                          f" size {store.size(layer.digest)}, manifest says {layer.size}")
        records.append(ImageRecord(_image_name(desc, name, len(index.manifests)), desc))
    if verify is not None:
        verify(records)
    for record in records:
        images.put(record)
        log.info("imported %s -> %s", record.name, record.target.digest)
    return records


def _is_signature_entry(desc: Descriptor) -> bool:
    """An index entry tagged like cosign's signature images (``sha256-<hex>.sig``)."""
    tag = desc.annotations.get(mt.ANNOTATION_REF_NAME, "")
    full = desc.annotations.get(mt.ANNOTATION_IMAGE_NAME, "")
    tag = tag.rsplit(":", 1)[-1] if ("/" in tag or ":" in tag) else tag
    full_tag = full.rsplit(":", 1)[-1] if ":" in full.rsplit("/", 1)[-1] else ""
    return mt.is_manifest(desc.media_type) and any(
        t.startswith("sha256-") and t.endswith(SIG_TAG_SUFFIX) for t in (tag, full_tag))


def _check_blobs(store: ContentStore, desc: Descriptor, tar_path: Path) -> None:
    manifest = Manifest.from_json(store.read_bytes(desc.digest), desc.digest)
    for blob in (manifest.config, *manifest.layers):
        if not store.has(blob.digest):
            raise NotFoundError(f"failed to import {str(tar_path)!r}: blob {str(blob.digest)!r} of signature"
                                f" image {str(desc.digest)!r} missing")
