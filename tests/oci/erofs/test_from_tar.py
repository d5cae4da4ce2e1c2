from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from fixtures.oci.imagebuild import Entry, make_tar
from runwasm.oci.digest import Digest
from runwasm.oci.erofs.from_tar import layer_uuid, tar_to_erofs
from runwasm.oci.erofs.reader import ErofsImage
from runwasm.oci.errors import DigestMismatchError, InvalidArgumentError
from runwasm.oci.mounts.syscalls import mount_erofs_file, umount
from tests.oci.treecompare import rich_entries, snapshot

UUID = layer_uuid("sha256:" + "0" * 64)


def _convert(tmp: Path, entries: list[Entry], name: str = "l.erofs") -> Path:
    out = tmp / name
    raw = make_tar(entries)
    result = tar_to_erofs(io.BytesIO(raw), out, uuid=UUID, expected_diff_id=Digest.of_bytes(raw))
    assert result.stats.size == out.stat().st_size
    return out


def test_uuid_matches_containerd_scheme() -> None:
    import uuid
    assert layer_uuid("sha256:ab") == uuid.uuid5(uuid.NAMESPACE_URL, "erofs:blobs/sha256:ab").bytes


def test_reader_round_trip(tmp_path: Path) -> None:
    img = _convert(tmp_path, rich_entries(300))
    with ErofsImage(img) as im:
        assert im.uuid == UUID
        hosts = im.lookup("/etc/hosts")
        assert im.read_data(hosts) == b"127.0.0.1 localhost\n"
        assert (hosts.uid, hosts.gid, hosts.nlink, hosts.mtime) == (1000, 1000, 2, 1_700_000_000)
        assert hosts.xattrs[b"user.comment"] == b"hello"
        assert im.lookup("/etc/hosts.hard").nid == hosts.nid
        assert im.readlink(im.lookup("/etc/verylong")) == b"y" * 4000
        assert im.readlink(im.lookup("/etc/longlink")).endswith(b"end")
        assert im.lookup("/dev/loop300").rdev == (7, 300)
        assert stat.S_ISFIFO(im.lookup("/run/fifo").mode)
        assert im.lookup("/setuid").mode & 0o7777 == 0o4755
        assert im.read_data(im.lookup("/exact")) == b"e" * 4096
        assert len([p for p, _ in im.walk() if p.startswith(b"/many/")]) == 307
        assert im.inode(im.root_nid).nid != 0


def test_output_is_deterministic(tmp_path: Path) -> None:
    entries = rich_entries(50)
    entries[15] = Entry("big", data=b"r" * 20000)
    a = _convert(tmp_path, entries, "a.erofs")
    b = _convert(tmp_path, entries, "b.erofs")
    assert a.read_bytes() == b.read_bytes()


def test_metadata_is_contiguous_after_data(tmp_path: Path) -> None:
    img = _convert(tmp_path, rich_entries(1000))
    with ErofsImage(img) as im:
        nids = sorted(ino.nid for _, ino in im.walk())
        assert nids[0] == im.root_nid == 1
        assert im.meta_blkaddr * im.block_size + nids[-1] * 32 < img.stat().st_size


def test_whiteouts_become_overlay_form(tmp_path: Path) -> None:
    img = _convert(tmp_path, [Entry("a/.wh.gone", data=b""), Entry("b/.wh..wh..opq"), Entry("b/keep", data=b"k")])
    with ErofsImage(img) as im:
        gone = im.lookup("/a/gone")
        assert stat.S_ISCHR(gone.mode)
        assert gone.rdev == (0, 0)
        assert im.lookup("/b").xattrs == {b"trusted.overlay.opaque": b"y"}
        with pytest.raises(Exception, match="no entry"):
            im.lookup("/b/.wh..wh..opq")


def test_later_member_replaces_earlier(tmp_path: Path) -> None:
    img = _convert(tmp_path, [Entry("x", data=b"one"), Entry("x", data=b"two"),
                              Entry("d/f", data=b"f"), Entry("d", "symlink", target="elsewhere")])
    with ErofsImage(img) as im:
        assert im.read_data(im.lookup("/x")) == b"two"
        assert im.readlink(im.lookup("/d")) == b"elsewhere"


@pytest.mark.parametrize(("entries", "needle"), [
    ([Entry("../escape", data=b"x")], "contains '..'"),
    ([Entry("a/../../b", data=b"x")], "contains '..'"),
    ([Entry("h", "hardlink", target="missing")], "missing or a directory"),
])
def test_malicious_tars_refused(tmp_path: Path, entries: list[Entry], needle: str) -> None:
    with pytest.raises(InvalidArgumentError, match=needle):
        _convert(tmp_path, entries)
    assert list(tmp_path.iterdir()) == []


def test_truncated_and_wrong_diff_id(tmp_path: Path) -> None:
    raw = make_tar([Entry("f", data=b"z" * 10000)])
    with pytest.raises(InvalidArgumentError, match="failed to read layer tar|ended"):
        tar_to_erofs(io.BytesIO(raw[:3000]), tmp_path / "t.erofs", uuid=UUID)
    with pytest.raises(DigestMismatchError, match="diff id mismatch"):
        tar_to_erofs(io.BytesIO(raw), tmp_path / "t.erofs", uuid=UUID, expected_diff_id=Digest.of_bytes(b""))
    assert list(tmp_path.iterdir()) == []


def test_huge_pax_header_refused(tmp_path: Path) -> None:
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "x" * 100}
        tar.addfile(info)
    raw = bytearray(buf.getvalue())
    raw[124:135] = b"%011o" % (1 << 33)  # the pax header claims an 8 GiB body
    with pytest.raises(InvalidArgumentError):
        tar_to_erofs(io.BytesIO(bytes(raw)), tmp_path / "h.erofs", uuid=UUID)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.privileged
def test_kernel_mount_matches_gnu_tar_and_fsck(tmp_path: Path, no_leaks: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount")
    entries = rich_entries(3000)
    raw = make_tar(entries)
    (tmp_path / "layer.tar").write_bytes(raw)
    ref = tmp_path / "ref"
    ref.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-xpf", str(tmp_path / "layer.tar"), "-C", str(ref)],
                   check=True)
    img = tmp_path / "l.erofs"
    tar_to_erofs(io.BytesIO(raw), img, uuid=UUID)
    if shutil.which("fsck.erofs"):
        subprocess.run(["fsck.erofs", str(img)], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount_erofs_file(img, mnt)
    try:
        got, want = snapshot(mnt), snapshot(ref)
        assert sorted(got) == sorted(want)
        for path in want:
            assert got[path] == want[path], path
    finally:
        umount(mnt)
