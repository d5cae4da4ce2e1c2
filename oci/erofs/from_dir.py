"""Build an EROFS image from a directory tree (e.g. to commit a container's upper dir).

Contract: walks ``src`` without following symlinks and without crossing mount points; keeps
modes, owners, nanosecond mtimes, xattrs (those with an EROFS prefix), device numbers, hard
links (by st_dev/st_ino) and overlayfs whiteouts/opaque xattrs as they are. Sockets are skipped
with a warning. Output is deterministic for identical trees.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from runwasm.oci.erofs.builder import ErofsBuilder, ImageStats, Inode
from runwasm.oci.erofs.format import encode_dev

log = logging.getLogger(__name__)


def _xattrs(path: bytes) -> dict[bytes, bytes]:
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    for name in names:
        try:
            out[os.fsencode(name)] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as err:
            log.warning("skipping xattr %r of %r: %s", name, path, err)
    return out


def _inode(st: os.stat_result, path: bytes) -> Inode:
    return Inode(mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, mtime=max(int(st.st_mtime), 0),
                 mtime_nsec=st.st_mtime_ns % 1_000_000_000, xattrs=_xattrs(path))


def dir_to_erofs(src: Path, out_path: Path, *, uuid: bytes, build_time: int = 0) -> ImageStats:
    """Write ``out_path`` (created; removed on error) from the tree at ``src``."""
    root = os.fsencode(src)
    root_st = os.lstat(root)
    try:
        with open(out_path, "xb+") as out:
            b = ErofsBuilder(out)
            b.add([], _inode(root_st, root))
            links: dict[tuple[int, int], list[bytes]] = {}
            stack: list[list[bytes]] = [[]]
            while stack:
                rel = stack.pop()
                dpath = os.path.join(root, *rel) if rel else root
                for name in sorted(os.listdir(dpath)):
                    parts = rel + [name]
                    path = os.path.join(dpath, name)
                    st = os.lstat(path)
                    mode = st.st_mode
                    if stat.S_ISDIR(mode):
                        b.add(parts, _inode(st, path))
                        if st.st_dev == root_st.st_dev:
                            stack.append(parts)
                        continue
                    key = (st.st_dev, st.st_ino)
                    if st.st_nlink > 1 and key in links:
                        b.link(parts, links[key])
                        continue
                    node = _inode(st, path)
                    if stat.S_ISREG(mode):
                        node.size = st.st_size
                        with open(path, "rb") as fh:
                            node.data_blk = b.write_data(fh, st.st_size)
                    elif stat.S_ISLNK(mode):
                        node.target = os.readlink(path)
                    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                        node.rdev = encode_dev(os.major(st.st_rdev), os.minor(st.st_rdev))
                    elif not stat.S_ISFIFO(mode):
                        log.warning("skipping %r: unsupported file type %o", path, stat.S_IFMT(mode))
                        continue
                    b.add(parts, node)
                    if st.st_nlink > 1:
                        links[key] = parts
            stats = b.finish(uuid=uuid, build_time=build_time)
            os.fsync(out.fileno())
        return stats
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
