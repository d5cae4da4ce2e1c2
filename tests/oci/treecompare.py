"""Generate rich test trees as tar entries, and compare two directory trees by lstat."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fixtures.oci.imagebuild import Entry


def rich_entries(n_files: int = 2000) -> list[Entry]:
    """xattrs, hard links, devices, fifos, long symlinks, deep dirs, thousands of files."""
    e = [Entry("bin/", "dir", mode=0o755), Entry("bin/sh", data=b"\x7fELF" + bytes(5000), mode=0o755),
         Entry("etc/", "dir", mode=0o755, mtime=1_600_000_000),
         Entry("etc/hosts", data=b"127.0.0.1 localhost\n", uid=1000, gid=1000,
               xattrs={"user.comment": "hello", "security.selinux": "system_u:object_r:etc_t:s0",
                       "trusted.t": "v"}),
         Entry("etc/hosts.hard", "hardlink", target="etc/hosts"),
         Entry("etc/link", "symlink", target="hosts"),
         Entry("etc/longlink", "symlink", target="x/" * 150 + "end"),
         Entry("etc/verylong", "symlink", target="y" * 4000),
         Entry("dev/", "dir", mode=0o755), Entry("dev/null", "char", mode=0o666, major=1, minor=3),
         Entry("dev/loop300", "block", mode=0o660, major=7, minor=300),
         Entry("run/fifo", "fifo", mode=0o600), Entry("empty", data=b""),
         Entry("setuid", data=b"s", mode=0o4755), Entry("sticky/", "dir", mode=0o1777),
         Entry("big", data=os.urandom(3 * 4096 + 17)), Entry("exact", data=b"e" * 4096)]
    deep = "/".join(f"d{i}" for i in range(40))
    e.append(Entry(f"{deep}/leaf", data=b"deep"))
    e += [Entry(f"many/sub{i % 7}/file-with-a-longish-name-{i:05d}.txt", data=b"%d\n" % i, mtime=1_700_000_000 + i)
          for i in range(n_files)]
    e.append(Entry("many/", "dir", mode=0o750, uid=5, gid=6))
    return e


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Map relative path -> (type+mode, uid, gid, size, mtime, nlink, rdev, link, content, xattrs)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + ([""] if dirpath == str(root) else []):
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            data = Path(path).read_bytes() if stat.S_ISREG(st.st_mode) else None
            try:
                xattrs = {k: os.getxattr(path, k, follow_symlinks=False)
                          for k in os.listxattr(path, follow_symlinks=False)}
            except OSError:
                xattrs = {}
            nlink = st.st_nlink if not stat.S_ISDIR(st.st_mode) else None
            mtime = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns  # implicit dirs differ
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size if data is not None else None,
                        mtime, nlink, st.st_rdev, link, data, xattrs)
    return out
