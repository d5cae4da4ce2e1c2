from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from fixtures.oci.imagebuild import Entry, make_tar
from runwasm.oci.errors import InvalidArgumentError
from runwasm.oci.mounts.extract import extract_tar

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="extraction keeps owners and makes device nodes: needs root")


def _extract(dest: Path, entries: list[Entry], overlay: bool = True) -> None:
    extract_tar(io.BytesIO(make_tar(entries)), dest, overlay_whiteouts=overlay)


def test_extracts_everything(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    _extract(dest, [Entry("etc/", "dir", mode=0o555), Entry("etc/f", data=b"x", uid=7, xattrs={"user.a": "b"}),
                    Entry("etc/h", "hardlink", target="etc/f"), Entry("l", "symlink", target="/etc/f"),
                    Entry("null", "char", major=1, minor=3), Entry("p", "fifo")])
    st = os.lstat(dest / "etc/f")
    assert (st.st_uid, st.st_nlink, st.st_mtime) == (7, 2, 1_700_000_000)
    assert os.getxattr(dest / "etc/f", "user.a") == b"b"
    assert os.lstat(dest / "etc").st_mode & 0o777 == 0o555
    assert os.readlink(dest / "l") == "/etc/f"
    assert os.major(os.lstat(dest / "null").st_rdev) == 1
    assert stat.S_ISFIFO(os.lstat(dest / "p").st_mode)


@pytest.mark.parametrize(("entries", "needle"), [
    ([Entry("../evil", data=b"x")], "contains '..'"),
    ([Entry("l", "symlink", target="/tmp"), Entry("l/evil", data=b"x")], "not a directory"),
    ([Entry("l", "symlink", target=".."), Entry("l/evil", data=b"x")], "not a directory"),
    ([Entry("h", "hardlink", target="../../etc/passwd")], "contains '..'"),
    ([Entry("h", "hardlink", target="/etc/passwd")], "not in the layer"),
    ([Entry("l", "symlink", target="/etc/passwd"), Entry("h", "hardlink", target="l")], "not a regular file"),
])
def test_malicious_members_refused(tmp_path: Path, entries: list[Entry], needle: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "d"
    with pytest.raises(InvalidArgumentError, match=needle):
        _extract(dest, entries)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_whiteouts_overlay_and_flatten(tmp_path: Path) -> None:
    base = [Entry("a/x", data=b"x"), Entry("a/y", data=b"y"), Entry("b/z", data=b"z")]
    top = [Entry("a/.wh.x"), Entry("b/.wh..wh..opq"), Entry("b/n", data=b"n")]
    ov = tmp_path / "ov"
    _extract(ov, top, overlay=True)
    assert stat.S_ISCHR(os.lstat(ov / "a/x").st_mode)
    assert os.lstat(ov / "a/x").st_rdev == 0
    assert os.getxattr(ov / "b", "trusted.overlay.opaque") == b"y"
    flat = tmp_path / "flat"
    _extract(flat, base, overlay=False)
    _extract(flat, top, overlay=False)
    assert sorted(os.listdir(flat / "a")) == ["y"]
    assert sorted(os.listdir(flat / "b")) == ["n"]


def test_truncated(tmp_path: Path) -> None:
    raw = make_tar([Entry("f", data=b"q" * 5000)])
    with pytest.raises(InvalidArgumentError, match="failed to extract"):
        extract_tar(io.BytesIO(raw[:2000]), tmp_path / "d", overlay_whiteouts=True)


# Found by tests/fuzz/test_layers.py (RUNWASM_FUZZ=400), pinned here.

def test_a_directory_replaced_by_an_escaping_symlink_does_not_chmod_outside(tmp_path: Path) -> None:
    """A directory's mode and owner were applied at the end to whatever its path named then: a
    later symlink of the same name pointing out of the tree made extraction chmod (0) and chown
    a host directory."""
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    dest = tmp_path / "d"
    _extract(dest, [Entry("b", "dir", mode=0o000, uid=4242), Entry("b", "symlink", target="../outside")],
             overlay=False)
    st = os.stat(outside)
    assert (st.st_mode & 0o7777, st.st_uid) == (0o755, 0)
    assert os.readlink(dest / "b") == "../outside"


@pytest.mark.parametrize("entries", [
    [Entry("b", "dir"), Entry("b", "symlink", target="b")],          # ELOOP at the deferred chmod
    [Entry("b", "dir"), Entry("b", "symlink", target="a/b")],        # ENOENT/ENOTDIR there
    [Entry("a", "dir"), Entry(".wh.a", data=b"")],                    # the directory was whited out
])
def test_a_replaced_or_removed_directory_is_not_an_oserror(tmp_path: Path, entries: list[Entry]) -> None:
    _extract(tmp_path / "d", entries, overlay=False)


def test_an_empty_symlink_target_is_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="empty target"):
        _extract(tmp_path / "d", [Entry("a", "symlink", target="")])
