"""Write OCI image-layout tarballs (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``).

The writer is deterministic: members are sorted, mtime 0, uid/gid 0, mode 0644, no user or
group names, USTAR/PAX format. Readers of layout tarballs live in ``layout_import``.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.image import Index
from runwasm.oci.jsonparse import dumps_canonical

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"


def blob_path(digest: Digest) -> str:
    """Path of a blob inside a layout: ``blobs/sha256/<hex>``."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


def deterministic_tarinfo(name: str, size: int, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_layout_tar(out: Path, index: Index, blobs: Mapping[Digest, bytes | Path]) -> None:
    """Write an image-layout tarball to ``out`` atomically (temp file + fsync + rename).

    ``blobs`` maps each digest to its bytes or to a file holding them; the caller guarantees
    that the content matches the digest.
    """
    members: list[tuple[str, bytes | Path]] = [
        (INDEX_FILE, dumps_canonical(index.to_json())),
        (OCI_LAYOUT_FILE, dumps_canonical({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION})),
    ]
    members += [(blob_path(d), src) for d, src in blobs.items()]
    members.sort(key=lambda m: m[0])
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
                dirs = sorted({"blobs/"} | {f"blobs/{d.algorithm}/" for d in blobs})
                for d in dirs:
                    info = deterministic_tarinfo(d, 0, 0o755)
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                for name, src in members:
                    if isinstance(src, bytes):
                        tar.addfile(deterministic_tarinfo(name, len(src)), io.BytesIO(src))
                    else:
                        with open(src, "rb") as blob:
                            tar.addfile(deterministic_tarinfo(name, os.fstat(blob.fileno()).st_size), blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
