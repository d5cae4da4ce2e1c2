"""A small read-only EROFS parser: superblock, inodes, directories, flat/inline/chunked data.

Used by round-trip tests (no mount, no root) and by the Wasm path to read a module out of a
``layer.erofs`` without mounting it. Compressed layouts and multi-device images are refused
with ``UnsupportedMediaTypeError``; structural damage raises ``InvalidArgumentError``.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

from runwasm.oci.erofs import format as fmt
from runwasm.oci.errors import InvalidArgumentError, NotFoundError, UnsupportedMediaTypeError

P = ParamSpec("P")
R = TypeVar("R")
_DAMAGE = (struct.error, IndexError, ValueError, OverflowError, KeyError)


def _structural(method: Callable[P, R]) -> Callable[P, R]:
    """Turn what a damaged image makes the parsing code raise (short structs, offsets past the
    end, out-of-range values) into the documented ``InvalidArgumentError`` naming the image."""
    @wraps(method)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except _DAMAGE as err:
            image = args[0]
            where = str(getattr(image, "path", "?"))
            raise InvalidArgumentError(f"failed to read EROFS image {where!r}: damaged structure"
                                       f" ({type(err).__name__}: {err})") from err
    return run


@dataclass(frozen=True, slots=True)
class InodeInfo:
    nid: int
    mode: int
    size: int
    uid: int
    gid: int
    mtime: int
    mtime_nsec: int
    nlink: int
    layout: int
    i_u: int
    xattrs: dict[bytes, bytes]
    inline_off: int  # absolute offset of inline tail data / chunk index

    @property
    def rdev(self) -> tuple[int, int]:
        return fmt.decode_dev(self.i_u)


class ErofsImage:
    """Random access to an EROFS image file. Use as a context manager or call ``close``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: BinaryIO = open(path, "rb")
        try:
            self._fh.seek(fmt.SUPERBLOCK_OFFSET)
            head = self._fh.read(fmt.SUPERBLOCK_SIZE)
            if len(head) < fmt.SUPERBLOCK_SIZE:
                raise InvalidArgumentError(f"failed to open EROFS image {str(path)!r}: shorter than a superblock"
                                           f" ({fmt.SUPERBLOCK_OFFSET + len(head)} bytes)")
            sb = fmt.unpack_superblock(head)
            if sb["magic"] != fmt.MAGIC:
                raise InvalidArgumentError(f"failed to open EROFS image {str(path)!r}: bad magic {sb['magic']!r}")
            bits = int(sb["blkszbits"])
            if bits not in (9, 12):
                raise UnsupportedMediaTypeError(f"failed to open EROFS image {str(path)!r}: block size 2^{bits}")
            unknown = int(sb["feature_incompat"]) & ~fmt.READER_INCOMPAT
            if unknown:
                raise UnsupportedMediaTypeError(
                    f"failed to open EROFS image {str(path)!r}: unsupported incompat features {unknown:#x}")
        except BaseException:
            self._fh.close()
            raise
        self.block_size = 1 << bits
        self.meta_blkaddr = int(sb["meta_blkaddr"])
        self.root_nid = int(sb["root_nid"])
        self.blocks = int(sb["blocks"])
        self.inos = int(sb["inos"])
        uuid = sb["uuid"]
        self.uuid = uuid if isinstance(uuid, bytes) else b""
        self.build_time = int(sb["build_time"])

    def __enter__(self) -> ErofsImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    def _read(self, off: int, n: int) -> bytes:
        self._fh.seek(off)
        data = self._fh.read(n)
        if len(data) != n:
            raise InvalidArgumentError(f"failed to read EROFS image {str(self.path)!r}: short read at {off}")
        return data

    @_structural
    def inode(self, nid: int) -> InodeInfo:
        off = self.meta_blkaddr * self.block_size + fmt.INODE_SLOT * nid
        raw = fmt.unpack_inode(self._read(off, fmt.EXTENDED_INODE_SIZE))
        if raw["layout"] in (1, 3):
            raise UnsupportedMediaTypeError(f"failed to read nid {nid}: compressed layout {raw['layout']}")
        xsize = fmt.xattr_isize(raw["xattr_icount"])
        xattrs = fmt.unpack_xattrs(self._read(off + raw["isize"], xsize)) if xsize else {}
        return InodeInfo(nid, raw["mode"], raw["size"], raw["uid"], raw["gid"], raw["mtime"],
                         raw["mtime_nsec"], raw["nlink"], raw["layout"], raw["i_u"], xattrs,
                         off + raw["isize"] + xsize)

    @_structural
    def read_data(self, ino: InodeInfo, offset: int = 0, length: int | None = None) -> bytes:
        """File (or directory/symlink) content bytes [offset, offset+length)."""
        end = ino.size if length is None else min(ino.size, offset + length)
        out = bytearray()
        bs = self.block_size
        pos = offset
        while pos < end:
            blk, boff = divmod(pos, bs)
            n = min(bs - boff, end - pos)
            out += self._read(self._block_addr(ino, blk) + boff, n) if self._mapped(ino, blk) else bytes(n)
            pos += n
        return bytes(out)

    def _mapped(self, ino: InodeInfo, blk: int) -> bool:
        if ino.layout != fmt.LAYOUT_CHUNK_BASED:
            return True
        return self._chunk_addr(ino, blk) is not None

    def _chunk_addr(self, ino: InodeInfo, blk: int) -> int | None:
        chunkbits = (ino.i_u & 0x1F)
        chunk = blk >> chunkbits
        if ino.i_u & 0x20:  # 8-byte indexes: u16 advise, u16 device id, u32 blkaddr
            base = (ino.inline_off + 7) // 8 * 8
            _adv, dev, addr = struct.unpack("<HHI", self._read(base + 8 * chunk, 8))
            if dev:
                raise UnsupportedMediaTypeError(f"failed to read nid {ino.nid}: multi-device chunk")
        else:
            (addr,) = struct.unpack("<I", self._read(ino.inline_off + 4 * chunk, 4))
        if addr == 0xFFFFFFFF:
            return None
        return int(addr) + (blk - (chunk << chunkbits))

    def _block_addr(self, ino: InodeInfo, blk: int) -> int:
        bs = self.block_size
        if ino.layout == fmt.LAYOUT_CHUNK_BASED:
            addr = self._chunk_addr(ino, blk)
            assert addr is not None
            return addr * bs
        nblocks = (ino.size + bs - 1) // bs
        if ino.layout == fmt.LAYOUT_FLAT_INLINE and blk == nblocks - 1:
            tail = ino.inline_off
            if tail // bs != (tail + ino.size % bs - 1) // bs and ino.size % bs:
                raise InvalidArgumentError(f"failed to read nid {ino.nid}: inline data crosses a block boundary")
            return tail
        if ino.layout not in (fmt.LAYOUT_FLAT_PLAIN, fmt.LAYOUT_FLAT_INLINE):
            raise UnsupportedMediaTypeError(f"failed to read nid {ino.nid}: layout {ino.layout}")
        return (ino.i_u + blk) * bs

    @_structural
    def listdir(self, ino: InodeInfo) -> list[tuple[bytes, int, int]]:
        """(name, nid, file type) of every entry, including ``.`` and ``..``."""
        if not stat.S_ISDIR(ino.mode):
            raise InvalidArgumentError(f"failed to list nid {ino.nid}: not a directory")
        data = self.read_data(ino)
        out = []
        for start in range(0, len(data), self.block_size):
            out += fmt.unpack_dir_block(data[start:start + self.block_size])
        return out

    @_structural
    def lookup(self, path: str | bytes) -> InodeInfo:
        """Resolve an absolute path without following symlinks. Raises NotFoundError."""
        ino = self.inode(self.root_nid)
        for comp in [c for c in os.fsencode(path).split(b"/") if c]:
            entries = {name: nid for name, nid, _ in self.listdir(ino)}
            if comp not in entries:
                raise NotFoundError(f"failed to look up {path!r} in {str(self.path)!r}: no entry {comp!r}")
            ino = self.inode(entries[comp])
        return ino

    @_structural
    def readlink(self, ino: InodeInfo) -> bytes:
        return self.read_data(ino)

    @_structural
    def walk(self) -> list[tuple[bytes, InodeInfo]]:
        """Every (path, inode) in the image, depth-first, sorted, root as ``b"/"``.

        Raises:
            InvalidArgumentError: damaged structure, or a directory reached twice (a cycle).
        """
        out: list[tuple[bytes, InodeInfo]] = []
        stack = [(b"/", self.inode(self.root_nid))]
        seen_dirs: set[int] = set()
        while stack:
            path, ino = stack.pop()
            out.append((path, ino))
            if stat.S_ISDIR(ino.mode):
                if ino.nid in seen_dirs:  # a damaged image can link a directory into itself
                    raise InvalidArgumentError(f"failed to walk EROFS image {str(self.path)!r}: directory"
                                               f" nid {ino.nid} is reached twice (a cycle) at {path!r}")
                seen_dirs.add(ino.nid)
                kids = [(n, nid) for n, nid, _ in self.listdir(ino) if n not in (b".", b"..")]
                for name, nid in sorted(kids, reverse=True):
                    stack.append((path.rstrip(b"/") + b"/" + name, self.inode(nid)))
        return out
