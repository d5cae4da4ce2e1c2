from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fixtures.oci.imagebuild import make_tar
from runwasm.oci.erofs.from_dir import dir_to_erofs
from runwasm.oci.erofs.reader import ErofsImage
from runwasm.oci.mounts.syscalls import mount_erofs_file, umount
from tests.oci.treecompare import rich_entries, snapshot

pytestmark = [pytest.mark.privileged, pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount")]


def test_directory_round_trip_through_kernel_and_reader(no_leaks: Path) -> None:
    tmp = no_leaks
    (tmp / "l.tar").write_bytes(make_tar(rich_entries(500)))
    src = tmp / "src"
    src.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-xpf", str(tmp / "l.tar"), "-C", str(src)], check=True)
    os.mknod(src / "whiteout", 0o020000, os.makedev(0, 0))  # an upper dir's overlay whiteout
    img = tmp / "d.erofs"
    stats = dir_to_erofs(src, img, uuid=bytes(16))
    again = tmp / "d2.erofs"
    dir_to_erofs(src, again, uuid=bytes(16))
    assert img.read_bytes() == again.read_bytes()
    if shutil.which("fsck.erofs"):
        subprocess.run(["fsck.erofs", str(img)], check=True, capture_output=True)
    mnt = tmp / "mnt"
    mnt.mkdir()
    mount_erofs_file(img, mnt)
    try:
        want, got = snapshot(src), snapshot(mnt)
        for path in want:
            assert got[path] == want[path], path
        assert sorted(got) == sorted(want)
        # the reader agrees with the kernel on every entry
        with ErofsImage(img) as im:
            walked = im.walk()
            assert len({ino.nid for _, ino in walked}) == stats.inodes
            for path, ino in walked:
                st = os.lstat(mnt / path.decode().lstrip("/")) if path != b"/" else os.lstat(mnt)
                assert (ino.mode, ino.uid, ino.gid, ino.nlink) == (st.st_mode, st.st_uid, st.st_gid, st.st_nlink), path
                if os.path.isfile(mnt / path.decode().lstrip("/")) and not os.path.islink(mnt / path.decode().lstrip("/")):
                    assert im.read_data(ino) == (mnt / path.decode().lstrip("/")).read_bytes()
    finally:
        umount(mnt)
