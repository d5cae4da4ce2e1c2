"""Diff ``Apply`` into a snapshot: a layer blob straight into the snapshot's ``applied.erofs``.

Called by ``SnapshotStore.apply_layer`` with the store's lock held. The snapshot must be a fresh
active one of this store (``snapshot_of_mounts``); tar layers (plain, gzip, zstd) go through the
tar -> EROFS writer in one pass (AUFS whiteouts become overlay whiteouts, ``..`` is refused);
native EROFS layers have their superblock checked and are copied byte for byte. The result is
written to a ``.tmp-`` file and renamed; on any error nothing is left. ``Commit`` then takes
``applied.erofs`` as the layer.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import IO, cast

from runwasm.oci.compression import HashingReader, decompressed
from runwasm.oci.erofs.from_tar import layer_uuid, tar_to_erofs
from runwasm.oci.errors import FailedPreconditionError, UnsupportedMediaTypeError
from runwasm.oci.layers import check_erofs_superblock
from runwasm.oci.mediatypes import LayerKind
from runwasm.oci.snapshotter.store import APPLIED, Applied, MountSpec, SnapshotStore


def apply_layer(store: SnapshotStore, mounts: Sequence[MountSpec], blob: IO[bytes], kind: LayerKind,
                blob_digest: str) -> Applied:
    """Write the layer ``blob`` (of ``kind``) as ``applied.erofs`` of the fresh active
    snapshot those ``mounts`` belong to, in one pass: tar layers through the tar -> EROFS
    writer (whiteouts in overlay form, ``..`` refused), native EROFS layers checked and copied.
    Returns the uncompressed content's digest and size (the diff ID, for the caller to
    check). Nothing is left behind on error."""
    if not (kind.is_tar or kind.is_erofs):
        raise UnsupportedMediaTypeError(f"failed to apply layer {blob_digest!r}: a {kind.value} layer is not"
                                        " a filesystem layer")
    snap = store.snapshot_of_mounts(mounts)
    d = store.sdir(snap)
    if any((d / "fs").iterdir()) or (d / APPLIED).exists():
        raise FailedPreconditionError(f"failed to apply layer {blob_digest!r} to snapshot {snap.key!r}:"
                                      " the snapshot is not empty (this differ applies one layer onto a"
                                      " fresh snapshot)")
    tmp = d / f".tmp-{APPLIED}"
    tmp.unlink(missing_ok=True)
    stream = decompressed(blob, kind)
    try:
        if kind.is_tar:
            counted = HashingReader(stream)
            res = tar_to_erofs(cast(IO[bytes], counted), tmp, uuid=layer_uuid(blob_digest))
            out = Applied(str(res.diff_id), counted.count)
        else:
            out = _copy_erofs(stream, tmp, blob_digest)
        blob.read()  # drain, so that the compressed digest is checked by the caller's stream
        os.rename(tmp, d / APPLIED)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, f"failed to apply layer {blob_digest!r} to snapshot {snap.key!r}: failed to"
                                 f" write EROFS image {str(tmp)!r}: {err.strerror or err}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _copy_erofs(stream: IO[bytes], tmp: Path, what: str) -> Applied:
    reader = HashingReader(stream)
    with open(tmp, "xb") as out:
        head = reader.read(4096)
        check_erofs_superblock(head, repr(what))
        out.write(head)
        shutil.copyfileobj(reader, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    return Applied(str(reader.digest), reader.count)

