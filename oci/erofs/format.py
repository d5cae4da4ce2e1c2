"""EROFS on-disk structures used by runwasm's writer and reader (little-endian throughout).

Source of truth: erofs-utils ``include/erofs_fs.h`` (same as the kernel's ``fs/erofs/erofs_fs.h``)
and kernel ``Documentation/filesystems/erofs.rst``; see ../shared/docs/erofs.md section 2.
Only the uncompressed subset is modelled: extended (64-byte) inodes, FLAT_PLAIN and
FLAT_INLINE data, CHUNK_BASED for reading, inline xattrs with the built-in prefix table.
"""

from __future__ import annotations

import stat
import struct

MAGIC = 0xE0F5E1E2
SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 128
BLOCK_BITS = 12
BLOCK_SIZE = 1 << BLOCK_BITS
INODE_SLOT = 32
EXTENDED_INODE_SIZE = 64
COMPACT_INODE_SIZE = 32
DIRENT_SIZE = 12
XATTR_HEADER_SIZE = 12
XATTR_ENTRY_SIZE = 4

# i_format: bit 0 = version, bits 1-3 = data layout.
LAYOUT_FLAT_PLAIN = 0
LAYOUT_FLAT_INLINE = 2
LAYOUT_CHUNK_BASED = 4
FEATURE_INCOMPAT_CHUNKED_FILE = 0x4
FEATURE_INCOMPAT_DEVICE_TABLE = 0x8
# Incompat bits the reader understands (the writer sets none).
READER_INCOMPAT = FEATURE_INCOMPAT_CHUNKED_FILE

FT_UNKNOWN, FT_REG, FT_DIR, FT_CHR, FT_BLK, FT_FIFO, FT_SOCK, FT_LNK = range(8)
_FT_BY_MODE = {stat.S_IFREG: FT_REG, stat.S_IFDIR: FT_DIR, stat.S_IFCHR: FT_CHR,
               stat.S_IFBLK: FT_BLK, stat.S_IFIFO: FT_FIFO, stat.S_IFSOCK: FT_SOCK,
               stat.S_IFLNK: FT_LNK}

# xattr name prefixes (e_name_index): full prefix -> index. ACL names have an empty suffix.
XATTR_PREFIXES: tuple[tuple[bytes, int], ...] = (
    (b"system.posix_acl_access", 2), (b"system.posix_acl_default", 3),
    (b"user.", 1), (b"trusted.", 4), (b"lustre.", 5), (b"security.", 6))
XATTR_PREFIX_BY_INDEX = {i: p for p, i in XATTR_PREFIXES}

_SB = struct.Struct("<IIIBBHQQIIII16s16sIHHHBBIQB23x")
_INODE_EXT = struct.Struct("<HHHHQIIIIQII16x")
_INODE_COMPACT = struct.Struct("<HHHHIIIIHHI")
_DIRENT = struct.Struct("<QHBx")
_XATTR_ENTRY = struct.Struct("<BBH")
assert _SB.size == SUPERBLOCK_SIZE
assert _INODE_EXT.size == EXTENDED_INODE_SIZE
assert _INODE_COMPACT.size == COMPACT_INODE_SIZE


def file_type(mode: int) -> int:
    return _FT_BY_MODE.get(stat.S_IFMT(mode), FT_UNKNOWN)


def encode_dev(major: int, minor: int) -> int:
    """Linux ``new_encode_dev``."""
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def decode_dev(dev: int) -> tuple[int, int]:
    return (dev & 0xFFF00) >> 8, (dev & 0xFF) | ((dev >> 12) & 0xFFF00)


def pack_superblock(*, root_nid: int, inos: int, build_time: int, blocks: int, meta_blkaddr: int,
                    uuid: bytes, volume_name: bytes = b"", feature_compat: int = 0,
                    feature_incompat: int = 0) -> bytes:
    return _SB.pack(MAGIC, 0, feature_compat, BLOCK_BITS, 0, root_nid, inos, build_time, 0, blocks,
                    meta_blkaddr, 0, uuid, volume_name, feature_incompat, 0, 0, 0, 0, 0, 0, 0, 0)


def unpack_superblock(data: bytes) -> dict[str, int | bytes]:
    f = _SB.unpack(data[:SUPERBLOCK_SIZE])
    names = ("magic", "checksum", "feature_compat", "blkszbits", "sb_extslots", "root_nid", "inos",
             "build_time", "build_time_nsec", "blocks", "meta_blkaddr", "xattr_blkaddr", "uuid",
             "volume_name", "feature_incompat", "u1", "extra_devices", "devt_slotoff", "dirblkbits",
             "xattr_prefix_count", "xattr_prefix_start", "packed_nid", "xattr_filter_reserved")
    return dict(zip(names, f, strict=True))


def pack_inode_extended(*, layout: int, xattr_icount: int, mode: int, size: int, i_u: int, ino: int,
                        uid: int, gid: int, mtime: int, mtime_nsec: int, nlink: int) -> bytes:
    return _INODE_EXT.pack(1 | (layout << 1), xattr_icount, mode & 0xFFFF, 0, size, i_u & 0xFFFFFFFF,
                           ino & 0xFFFFFFFF, uid, gid, mtime, mtime_nsec, nlink)


def unpack_inode(data: bytes) -> dict[str, int]:
    """Decode a compact or extended inode from at least its first 32 (or 64) bytes."""
    fmt = struct.unpack_from("<H", data)[0]
    if fmt & 1:
        (i_format, icount, mode, _nb, size, i_u, ino, uid, gid, mtime, nsec,
         nlink) = _INODE_EXT.unpack_from(data)
        isize = EXTENDED_INODE_SIZE
    else:
        i_format, icount, mode, nlink, size, mtime, i_u, ino, uid, gid, _r = _INODE_COMPACT.unpack_from(data)
        nsec = 0
        isize = COMPACT_INODE_SIZE
    return {"format": i_format, "layout": (i_format >> 1) & 7, "xattr_icount": icount, "mode": mode,
            "size": size, "i_u": i_u, "ino": ino, "uid": uid, "gid": gid, "mtime": mtime,
            "mtime_nsec": nsec, "nlink": nlink, "isize": isize}


def xattr_isize(icount: int) -> int:
    return 0 if icount == 0 else XATTR_HEADER_SIZE + 4 * (icount - 1)


def split_xattr_name(name: bytes) -> tuple[int, bytes] | None:
    """(prefix index, suffix) for a full xattr name, or None when no built-in prefix fits."""
    for prefix, index in XATTR_PREFIXES:
        if index in (2, 3):
            if name == prefix:
                return index, b""
        elif name.startswith(prefix) and len(name) > len(prefix):
            return index, name[len(prefix):]
    return None


def pack_xattrs(xattrs: list[tuple[int, bytes, bytes]]) -> bytes:
    """Inline xattr region for (index, suffix, value) triples; b"" when empty."""
    if not xattrs:
        return b""
    out = bytearray(XATTR_HEADER_SIZE)
    for index, suffix, value in xattrs:
        out += _XATTR_ENTRY.pack(len(suffix), index, len(value)) + suffix + value
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def unpack_xattrs(region: bytes) -> dict[bytes, bytes]:
    shared = region[4]
    pos = XATTR_HEADER_SIZE + 4 * shared
    out = {}
    while pos + XATTR_ENTRY_SIZE <= len(region):
        name_len, index, value_size = _XATTR_ENTRY.unpack_from(region, pos)
        pos += XATTR_ENTRY_SIZE
        name = XATTR_PREFIX_BY_INDEX.get(index, b"?") + region[pos:pos + name_len]
        out[name] = region[pos + name_len:pos + name_len + value_size]
        pos += name_len + value_size
        pos += -pos % 4
    return out


def dirent_blocks(names: list[bytes], block_size: int = BLOCK_SIZE) -> list[list[bytes]]:
    """Split sorted names into directory blocks (an entry never straddles a block)."""
    blocks: list[list[bytes]] = [[]]
    used = 0
    for name in names:
        need = DIRENT_SIZE + len(name)
        if blocks[-1] and used + need > block_size:
            blocks.append([])
            used = 0
        blocks[-1].append(name)
        used += need
    return blocks


def dir_size(blocks: list[list[bytes]], block_size: int = BLOCK_SIZE) -> int:
    last = blocks[-1]
    return (len(blocks) - 1) * block_size + DIRENT_SIZE * len(last) + sum(map(len, last))


def pack_dir_block(entries: list[tuple[bytes, int, int]], pad_to: int) -> bytes:
    """One directory block from (name, nid, file_type); zero-padded to ``pad_to`` bytes."""
    nameoff = DIRENT_SIZE * len(entries)
    heads, names = bytearray(), bytearray()
    for name, nid, ftype in entries:
        heads += _DIRENT.pack(nid, nameoff + len(names), ftype)
        names += name
    data = bytes(heads + names)
    return data + b"\0" * (pad_to - len(data))


def unpack_dir_block(block: bytes) -> list[tuple[bytes, int, int]]:
    if len(block) < DIRENT_SIZE:
        return []
    first_off = _DIRENT.unpack_from(block)[1]
    n = first_off // DIRENT_SIZE
    heads = [_DIRENT.unpack_from(block, i * DIRENT_SIZE) for i in range(n)]
    out = []
    for i, (nid, off, ftype) in enumerate(heads):
        end = heads[i + 1][1] if i + 1 < n else len(block)
        name = block[off:end]
        if i + 1 == n:
            name = name.rstrip(b"\0")
        out.append((name, nid, ftype))
    return out
