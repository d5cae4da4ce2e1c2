"""Layer materialisations under ``<root>/layers/<diff id hex>/`` (one per diff ID).

* ``layer.erofs``: our EROFS image of a tar layer, or a native EROFS layer (decompressed when
  ``+zstd``) after its superblock was checked; the uncompressed bytes are hashed and must
  equal the diff ID.
* ``fs/``: the layer extracted by the hardened extractor (fallback when EROFS cannot be
  mounted); whiteouts in overlay form (``overlay=True``).

Materialisation is idempotent and atomic: work happens in a ``.tmp-*`` sibling that is renamed
into place; a crash leaves only ``.tmp-*`` entries, which ``remove_unreferenced`` deletes.
Paths stay short because fsconfig caps each mount option value at 255 bytes.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import IO, cast

from runwasm.oci import mediatypes as mt
from runwasm.oci.compression import HashingReader, decompressed
from runwasm.oci.digest import Digest
from runwasm.oci.erofs import format as efmt
from runwasm.oci.erofs.from_tar import layer_uuid, tar_to_erofs
from runwasm.oci.errors import DigestMismatchError, InvalidArgumentError, UnsupportedMediaTypeError
from runwasm.oci.image import Descriptor
from runwasm.oci.store import ContentStore

log = logging.getLogger(__name__)
EROFS_NAME = "layer.erofs"


def check_erofs_superblock(head: bytes, what: str) -> None:
    """Refuse bytes that do not start like an uncompressed EROFS image this code understands."""
    if len(head) < efmt.SUPERBLOCK_OFFSET + efmt.SUPERBLOCK_SIZE:
        raise InvalidArgumentError(f"failed to check EROFS layer {what}: shorter than a superblock")
    sb = efmt.unpack_superblock(head[efmt.SUPERBLOCK_OFFSET:])
    if sb["magic"] != efmt.MAGIC:
        raise InvalidArgumentError(f"failed to check EROFS layer {what}: bad magic {sb['magic']!r}")
    if sb["blkszbits"] not in (9, 12):
        raise UnsupportedMediaTypeError(f"failed to check EROFS layer {what}: block size 2^{sb['blkszbits']!r}")


class LayerStore:
    def __init__(self, root: Path) -> None:
        self.dir = root / "layers"
        self.dir.mkdir(parents=True, exist_ok=True)

    def layer_dir(self, diff_id: Digest) -> Path:
        return self.dir / diff_id.hex

    def erofs_path(self, diff_id: Digest) -> Path:
        return self.layer_dir(diff_id) / EROFS_NAME

    def ensure_erofs(self, store: ContentStore, layer: Descriptor, diff_id: Digest) -> Path:
        """Return ``layer.erofs`` for the layer, building it from the blob if needed.

        Raises:
            DigestMismatchError: the uncompressed content does not hash to ``diff_id``.
            UnsupportedMediaTypeError: a Wasm layer, or an unknown type.
        """
        final = self.erofs_path(diff_id)
        if final.exists():
            return final
        kind = mt.layer_kind(layer.media_type)
        if kind is mt.LayerKind.WASM:
            raise UnsupportedMediaTypeError(
                f"failed to materialise layer {str(layer.digest)!r}: Wasm layers are modules, not filesystems")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{secrets.token_hex(4)}.erofs"
        try:
            with store.open(layer.digest) as blob:
                stream = decompressed(blob, kind)
                if kind.is_tar:
                    tar_to_erofs(stream, tmp, uuid=layer_uuid(layer.digest), expected_diff_id=diff_id)
                else:
                    self._copy_native(stream, tmp, diff_id, layer)
            os.rename(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("materialised layer %s as %s", layer.digest, final)
        return final

    @staticmethod
    def _copy_native(stream: object, tmp: Path, diff_id: Digest, layer: Descriptor) -> None:
        reader = HashingReader(stream)
        with open(tmp, "xb") as out:
            head = reader.read(efmt.BLOCK_SIZE)
            check_erofs_superblock(head, repr(str(layer.digest)))
            out.write(head)
            shutil.copyfileobj(reader, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        if reader.digest != diff_id:
            raise DigestMismatchError(f"failed to materialise layer {str(layer.digest)!r}: uncompressed"
                                      f" EROFS hashes to {str(reader.digest)!r}, diff id is {str(diff_id)!r}")

    def ensure_dir(self, store: ContentStore, layer: Descriptor, diff_id: Digest) -> Path:
        """Return ``fs/``: the layer extracted with whiteouts in overlay form."""
        from runwasm.oci.mounts.extract import extract_tar

        final = self.layer_dir(diff_id) / "fs"
        if final.exists():
            return final
        kind = mt.layer_kind(layer.media_type)
        if not kind.is_tar:
            raise UnsupportedMediaTypeError(
                f"failed to extract layer {str(layer.digest)!r}: {layer.media_type!r} is not a tar layer")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{secrets.token_hex(4)}"
        try:
            with store.open(layer.digest) as blob:
                reader = HashingReader(decompressed(blob, kind))
                extract_tar(cast(IO[bytes], reader), tmp, overlay_whiteouts=True)
                reader.drain()
            if reader.digest != diff_id:
                raise DigestMismatchError(f"failed to extract layer {str(layer.digest)!r}: diff id mismatch:"
                                          f" expected {str(diff_id)!r}, got {str(reader.digest)!r}")
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return final

    def remove_unreferenced(self, live: set[Digest]) -> list[Path]:
        """Delete materialisations whose diff ID is not in ``live``, and crash leftovers."""
        removed = []
        live_hex = {d.hex for d in live}
        for d in self.dir.iterdir():
            if d.name not in live_hex:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
                continue
            for leftover in d.glob(".tmp-*"):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
        return removed
