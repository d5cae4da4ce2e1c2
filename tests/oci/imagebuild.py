"""Build small OCI layout tarballs in tests (deterministic; any layer bytes and media types)."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.image import Descriptor, ExecConfig, ImageConfig, Index, Manifest, Platform
from runwasm.oci.jsonparse import dumps_canonical
from runwasm.oci.layout import write_layout_tar

LINUX_AMD64 = Platform("linux", "amd64")


@dataclass
class Entry:
    """One tar member: kind in file/dir/symlink/hardlink/char/block/fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""
    uid: int = 0
    gid: int = 0
    mtime: int = 1_700_000_000
    major: int = 0
    minor: int = 0
    xattrs: dict[str, str] | None = None


_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
          "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
          "fifo": tarfile.FIFOTYPE}


def make_tar(entries: Sequence[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = _TYPES[e.kind]
            info.mode = e.mode
            info.uid, info.gid, info.mtime = e.uid, e.gid, e.mtime
            info.linkname = e.target
            info.devmajor, info.devminor = e.major, e.minor
            if e.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            info.size = len(e.data) if e.kind == "file" else 0
            tar.addfile(info, io.BytesIO(e.data) if e.kind == "file" else None)
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


@dataclass
class Layer:
    media_type: str
    blob: bytes
    diff_id: Digest


def tar_layer(entries: Sequence[Entry], compression: str = "gzip") -> Layer:
    raw = make_tar(entries)
    if compression == "gzip":
        return Layer(mt.OCI_LAYER_TAR_GZIP, gz(raw), Digest.of_bytes(raw))
    if compression == "zstd":
        import zstandard
        return Layer(mt.OCI_LAYER_TAR_ZSTD, zstandard.ZstdCompressor().compress(raw), Digest.of_bytes(raw))
    return Layer(mt.OCI_LAYER_TAR, raw, Digest.of_bytes(raw))


def write_image(out: Path, layers: Sequence[Layer], name: str = "docker.io/test/img:latest",
                platform: Platform = LINUX_AMD64,
                argv: Sequence[str] = ("/bin/sh",), extra_blobs: dict[Digest, bytes] | None = None,
                annotate: bool = True) -> Descriptor:
    config = ImageConfig(platform.architecture, platform.os, tuple(x.diff_id for x in layers),
                         ExecConfig(env=("PATH=/bin",), cmd=tuple(argv)))
    cbytes = dumps_canonical(config.to_json())
    cdesc = Descriptor(mt.OCI_CONFIG, Digest.of_bytes(cbytes), len(cbytes))
    ldescs = tuple(Descriptor(x.media_type, Digest.of_bytes(x.blob), len(x.blob)) for x in layers)
    mbytes = dumps_canonical(Manifest(cdesc, ldescs).to_json())
    ann = {mt.ANNOTATION_IMAGE_NAME: name, mt.ANNOTATION_REF_NAME: name.rsplit(":", 1)[1]} if annotate else {}
    mdesc = Descriptor(mt.OCI_MANIFEST, Digest.of_bytes(mbytes), len(mbytes), annotations=ann, platform=platform)
    blobs: dict[Digest, bytes | Path] = {cdesc.digest: cbytes, mdesc.digest: mbytes}
    blobs.update({d.digest: x.blob for d, x in zip(ldescs, layers, strict=True)})
    blobs.update(extra_blobs or {})
    write_layout_tar(out, Index((mdesc,)), blobs)
    return mdesc
