"""Build an uncompressed EROFS image: an in-memory inode tree plus streamed file data.

Theory of operation:

* Block 0 is reserved for the superblock (at byte 1024), written last.
* Regular-file data is streamed as it arrives (``add_file``), block-aligned, FLAT_PLAIN, from
  block 1 upwards (like ``mkfs.erofs -Enoinline_data``). A path added twice keeps the last one.
* ``finish`` lays out metadata: inodes in breadth-first order over sorted names, root first
  each on a 32-byte slot, all in one contiguous area after the data (nid 0 is left unused:
  userspace hides ``d_ino`` 0, so the root is nid 1). Directories of
  one block and symlinks go inline (FLAT_INLINE) when the tail fits without crossing a block
  boundary (padding to the next block when that wastes less than a separate data block);
  otherwise their data goes in data blocks before the metadata area.
* Extended inodes everywhere (per-file mtimes on every kernel). Output is a function of the
  inputs only: sorted entries, caller-supplied build time and UUID.

Hard links share one ``Inode`` object (nlink counted). Whiteout translation is the caller's job.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import deque
from dataclasses import dataclass, field
from typing import IO

from runwasm.oci.erofs import format as fmt
from runwasm.oci.errors import InvalidArgumentError

log = logging.getLogger(__name__)
BS = fmt.BLOCK_SIZE
_ZEROS = bytes(BS)


@dataclass(slots=True, eq=False)
class Inode:
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    mtime_nsec: int = 0
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    size: int = 0
    data_blk: int = 0
    rdev: int = 0
    target: bytes = b""
    children: dict[bytes, Inode] | None = None
    links: int = 1
    # set by finish()
    nid: int = 0
    layout: int = fmt.LAYOUT_FLAT_PLAIN
    tail: bytes = b""

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass(frozen=True, slots=True)
class ImageStats:
    size: int
    blocks: int
    inodes: int
    meta_blkaddr: int
    meta_bytes: int


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def split_path(path: str | bytes) -> list[bytes]:
    """Normalise a member path into components; refuses ``..`` (InvalidArgumentError)."""
    raw = os.fsencode(path)
    parts = [p for p in raw.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise InvalidArgumentError(f"failed to add {path!r}: path contains '..'")
    return parts


class ErofsBuilder:
    """Accumulate a tree and stream file data into ``out`` (a seekable binary file)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        out.seek(0)
        out.write(_ZEROS)
        self.next_blk = 1
        self.root = Inode(mode=stat.S_IFDIR | 0o755, children={})

    # ---- tree ----------------------------------------------------------------------------
    def parent_dir(self, parts: list[bytes]) -> Inode:
        """The directory holding ``parts[-1]``, creating missing parents (0755, root-owned)."""
        node = self.root
        for comp in parts[:-1]:
            assert node.children is not None
            child = node.children.get(comp)
            if child is None or not child.is_dir:
                child = Inode(mode=stat.S_IFDIR | 0o755, children={})
                node.children[comp] = child
            node = child
        return node

    def lookup(self, parts: list[bytes]) -> Inode | None:
        node: Inode | None = self.root
        for comp in parts:
            if node is None or node.children is None:
                return None
            node = node.children.get(comp)
        return node

    def add(self, parts: list[bytes], inode: Inode) -> None:
        """Place ``inode`` at ``parts`` (root when empty). A directory replacing a directory
        keeps the existing children; any other replacement drops the old entry."""
        if not parts:
            if not inode.is_dir:
                raise InvalidArgumentError("failed to add '/': root must be a directory")
            inode.children = self.root.children
            self.root = inode
            return
        parent = self.parent_dir(parts)
        assert parent.children is not None
        old = parent.children.get(parts[-1])
        if old is not None:
            if old.is_dir and inode.is_dir:
                inode.children = old.children
            elif not old.is_dir:
                old.links -= 1
        if inode.is_dir and inode.children is None:
            inode.children = {}
        parent.children[parts[-1]] = inode

    def remove(self, parts: list[bytes]) -> None:
        parent = self.lookup(parts[:-1])
        if parent is not None and parent.children is not None:
            parent.children.pop(parts[-1], None)

    def link(self, parts: list[bytes], target_parts: list[bytes]) -> None:
        """Hard link ``parts`` to the existing non-directory at ``target_parts``."""
        target = self.lookup(target_parts)
        if target is None or target.is_dir:
            raise InvalidArgumentError(
                f"failed to add hard link {b'/'.join(parts)!r}: target {b'/'.join(target_parts)!r}"
                " is missing or a directory")
        if self.lookup(parts) is target:
            return
        self.add(parts, target)
        target.links += 1

    def write_data(self, src: IO[bytes], size: int) -> int:
        """Copy exactly ``size`` bytes from ``src`` to the next free blocks; return the start block."""
        start = self.next_blk
        remaining = size
        while remaining:
            chunk = src.read(min(remaining, 1 << 20))
            if not chunk:
                raise InvalidArgumentError(f"failed to read file data: stream ended {remaining} bytes early")
            self.out.write(chunk)
            remaining -= len(chunk)
        pad = -size % BS
        if pad:
            self.out.write(_ZEROS[:pad])
        self.next_blk += (size + pad) // BS
        return start if size else 0

    # ---- layout --------------------------------------------------------------------------
    def finish(self, *, uuid: bytes, build_time: int = 0) -> ImageStats:
        """Lay out and write directories, metadata and the superblock. Does not fsync."""
        order: list[Inode] = []
        parents: dict[int, Inode] = {id(self.root): self.root}
        seen: set[int] = set()
        queue = deque([self.root])
        while queue:
            node = queue.popleft()
            if id(node) in seen:
                continue
            seen.add(id(node))
            order.append(node)
            for name in sorted(node.children or {}):
                child = (node.children or {})[name]
                if child.is_dir:
                    parents[id(child)] = node
                queue.append(child)
        dir_names: dict[int, list[list[bytes]]] = {}
        xattr_blobs: dict[int, bytes] = {}
        plain_tails: list[Inode] = []
        # nid 0 is left empty: the kernel reports nids as inode numbers and userspace
        # (glibc readdir, ls -a) hides entries with d_ino 0, so the root takes nid 1.
        pos = fmt.INODE_SLOT
        for node in order:
            xattr_blobs[id(node)] = blob = self._xattr_blob(node)
            if node.is_dir:
                names = sorted([b".", b".."] + list(node.children or {}))
                dir_names[id(node)] = blocks = fmt.dirent_blocks(names)
                node.size = fmt.dir_size(blocks)
                tail_len = node.size if len(blocks) == 1 else -1
            elif stat.S_ISLNK(node.mode):
                node.size = len(node.target)
                tail_len = node.size
            else:
                tail_len = 0
            base = fmt.EXTENDED_INODE_SIZE + len(blob)
            node.layout = fmt.LAYOUT_FLAT_PLAIN
            if tail_len > 0 and base + tail_len <= BS:
                start, end = pos + base, pos + base + tail_len
                if start // BS != (end - 1) // BS:
                    padded = _align(pos, BS)
                    if padded - pos <= BS - tail_len:
                        pos = padded
                if (pos + base) // BS == (pos + base + tail_len - 1) // BS:
                    node.layout = fmt.LAYOUT_FLAT_INLINE
            if node.layout == fmt.LAYOUT_FLAT_PLAIN and (node.is_dir or stat.S_ISLNK(node.mode)):
                plain_tails.append(node)
            node.nid = pos // fmt.INODE_SLOT
            pos = _align(pos + base + (tail_len if node.layout == fmt.LAYOUT_FLAT_INLINE else 0),
                         fmt.INODE_SLOT)
        meta_len = pos
        # data blocks for directories/symlinks that could not be inlined
        for node in plain_tails:
            node.data_blk = self.next_blk
            self.next_blk += _align(node.size, BS) // BS
        meta_blkaddr = self.next_blk
        for node in order:
            if node.is_dir:
                data = self._dir_data(node, parents[id(node)], dir_names[id(node)])
            elif stat.S_ISLNK(node.mode):
                data = node.target
            else:
                continue
            if node.layout == fmt.LAYOUT_FLAT_INLINE:
                node.tail = data
            else:
                self.out.seek(node.data_blk * BS)
                self.out.write(data + _ZEROS[:-len(data) % BS])
        meta = bytearray(meta_len)
        for ino, node in enumerate(order, start=1):
            blob = xattr_blobs[id(node)]
            off = node.nid * fmt.INODE_SLOT
            record = self._inode_bytes(node, ino, blob) + blob + node.tail
            meta[off:off + len(record)] = record
        self.out.seek(meta_blkaddr * BS)
        self.out.write(meta)
        nblocks = meta_blkaddr + _align(meta_len, BS) // BS
        self.out.write(_ZEROS[:-meta_len % BS])
        self.out.seek(fmt.SUPERBLOCK_OFFSET)
        self.out.write(fmt.pack_superblock(root_nid=self.root.nid, inos=len(order), build_time=build_time,
                                           blocks=nblocks, meta_blkaddr=meta_blkaddr, uuid=uuid))
        self.out.truncate(nblocks * BS)
        self.out.flush()
        return ImageStats(nblocks * BS, nblocks, len(order), meta_blkaddr, meta_len)

    def _xattr_blob(self, node: Inode) -> bytes:
        triples = []
        for name in sorted(node.xattrs):
            split = fmt.split_xattr_name(name)
            value = node.xattrs[name]
            if split is None or len(value) > 0xFFFF or len(split[1]) > 0xFF:
                log.warning("skipping xattr %r: no EROFS prefix for it or too large", name)
                continue
            triples.append((split[0], split[1], value))
        return fmt.pack_xattrs(triples)

    def _dir_data(self, node: Inode, parent: Inode, blocks: list[list[bytes]]) -> bytes:
        children = node.children or {}
        out = bytearray()
        for i, names in enumerate(blocks):
            entries = []
            for name in names:
                target = node if name == b"." else parent if name == b".." else children[name]
                entries.append((name, target.nid, fmt.file_type(target.mode)))
            last = i == len(blocks) - 1
            block = fmt.pack_dir_block(entries, 0 if last else BS)
            out += block
        return bytes(out)

    def _inode_bytes(self, node: Inode, ino: int, xattr_blob: bytes) -> bytes:
        icount = 0 if not xattr_blob else 1 + (len(xattr_blob) - fmt.XATTR_HEADER_SIZE) // 4
        if node.is_dir:
            nlink = 2 + sum(1 for c in (node.children or {}).values() if c.is_dir)
        else:
            nlink = max(node.links, 1)
        if stat.S_ISCHR(node.mode) or stat.S_ISBLK(node.mode):
            i_u = node.rdev
        elif node.layout == fmt.LAYOUT_FLAT_INLINE:
            i_u = 0
        else:
            i_u = node.data_blk
        return fmt.pack_inode_extended(layout=node.layout, xattr_icount=icount, mode=node.mode,
                                       size=node.size, i_u=i_u, ino=ino, uid=node.uid, gid=node.gid,
                                       mtime=node.mtime, mtime_nsec=node.mtime_nsec, nlink=nlink)
