"""Convert a tar stream (an OCI layer) into an EROFS image, like ``mkfs.erofs --tar=f --aufs``.

Contract: reads the uncompressed tar once, streaming; hashes it on the way and, when
``expected_diff_id`` is given, refuses a mismatch. AUFS whiteouts become overlayfs ones:
``.wh.<name>`` -> char device 0:0 named ``<name>``; ``.wh..wh..opq`` -> the parent directory
gets ``trusted.overlay.opaque=y``. Member names with ``..`` are refused; absolute names are made
relative. Hard links must point at an earlier member. PAX ``SCHILY.xattr.*`` headers become
xattrs; PAX mtimes keep their nanoseconds. On error the output file is removed.
"""

from __future__ import annotations

import os
import stat
import tarfile
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from runwasm.oci.compression import HashingReader
from runwasm.oci.digest import Digest
from runwasm.oci.erofs.builder import ErofsBuilder, ImageStats, Inode, split_path
from runwasm.oci.erofs.format import encode_dev
from runwasm.oci.errors import DigestMismatchError, InvalidArgumentError

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
OPAQUE_XATTR = b"trusted.overlay.opaque"


@dataclass(frozen=True, slots=True)
class ConvertResult:
    stats: ImageStats
    diff_id: Digest


def layer_uuid(blob_digest: Digest | str) -> bytes:
    """containerd's deterministic UUID: v5 (URL namespace) over ``erofs:blobs/<digest>``."""
    return uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"erofs:blobs/{blob_digest}").bytes


def _mtime(member: tarfile.TarInfo) -> tuple[int, int]:
    raw = member.pax_headers.get("mtime")
    if raw:
        sec, _, frac = raw.partition(".")
        try:
            return int(sec), int((frac + "000000000")[:9]) if frac else 0
        except ValueError:
            pass
    return max(int(member.mtime), 0), 0


def _xattrs(member: tarfile.TarInfo) -> dict[bytes, bytes]:
    out = {}
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            out[os.fsencode(key[len("SCHILY.xattr."):])] = raw
    return out


def _inode(member: tarfile.TarInfo, kind: int) -> Inode:
    sec, nsec = _mtime(member)
    return Inode(mode=kind | (member.mode & 0o7777), uid=member.uid, gid=member.gid, mtime=sec,
                 mtime_nsec=nsec, xattrs=_xattrs(member))


def apply_member(b: ErofsBuilder, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    """Add one tar member to the builder (whiteouts translated)."""
    parts = split_path(member.name)
    if parts and parts[-1] == OPAQUE_MARKER:
        parent = b.lookup(parts[:-1]) if len(parts) > 1 else b.root
        if parent is None or not parent.is_dir:
            parent = Inode(mode=stat.S_IFDIR | 0o755, children={})
            b.add(parts[:-1], parent)
        parent.xattrs[OPAQUE_XATTR] = b"y"
        return
    if parts and parts[-1].startswith(WHITEOUT_PREFIX):
        name = parts[-1][len(WHITEOUT_PREFIX):]
        if not name or name in (b".", b".."):
            raise InvalidArgumentError(f"failed to apply whiteout {member.name!r}: empty target")
        node = _inode(member, stat.S_IFCHR)
        node.mode = stat.S_IFCHR
        node.rdev = 0
        b.add(parts[:-1] + [name], node)
        return
    if member.isdir():
        b.add(parts, _inode(member, stat.S_IFDIR))
    elif member.isreg():
        if not parts:
            raise InvalidArgumentError(f"failed to add {member.name!r}: a regular file cannot be the root")
        node = _inode(member, stat.S_IFREG)
        node.size = member.size
        fh = tar.extractfile(member)
        assert fh is not None
        node.data_blk = b.write_data(fh, member.size)
        b.add(parts, node)
    elif member.issym():
        node = _inode(member, stat.S_IFLNK)
        node.mode = stat.S_IFLNK | 0o777
        node.target = os.fsencode(member.linkname)
        if not node.target:
            raise InvalidArgumentError(f"failed to add symlink {member.name!r}: empty target")
        b.add(parts, node)
    elif member.islnk():
        b.link(parts, split_path(member.linkname))
    elif member.ischr() or member.isblk():
        node = _inode(member, stat.S_IFCHR if member.ischr() else stat.S_IFBLK)
        node.rdev = encode_dev(member.devmajor, member.devminor)
        b.add(parts, node)
    elif member.isfifo():
        b.add(parts, _inode(member, stat.S_IFIFO))
    else:
        raise InvalidArgumentError(f"failed to add {member.name!r}: unsupported tar member type {member.type!r}")


def tar_to_erofs(src: IO[bytes], out_path: Path, *, uuid: bytes, expected_diff_id: Digest | None = None,
                 build_time: int = 0) -> ConvertResult:
    """Write ``out_path`` (created; removed again on error) from the uncompressed tar ``src``.

    Raises:
        InvalidArgumentError: malformed or truncated tar, unsafe names, dangling hard links.
        DigestMismatchError: the tar does not hash to ``expected_diff_id``.
    """
    reader = HashingReader(src)
    try:
        with open(out_path, "xb+") as out:
            builder = ErofsBuilder(out)
            try:
                with tarfile.open(fileobj=reader, mode="r|", errorlevel=2) as tar:
                    for member in tar:
                        apply_member(builder, tar, member)
                reader.drain()
            except (tarfile.TarError, EOFError) as err:
                raise InvalidArgumentError(f"failed to read layer tar: {err}") from err
            diff_id = reader.digest
            if expected_diff_id is not None and diff_id != expected_diff_id:
                raise DigestMismatchError(f"failed to convert layer: diff id mismatch: expected"
                                          f" {str(expected_diff_id)!r}, got {str(diff_id)!r}")
            stats = builder.finish(uuid=uuid, build_time=build_time)
            os.fsync(out.fileno())
        return ConvertResult(stats, diff_id)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
