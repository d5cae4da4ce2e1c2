"""The snapshotter store on a real directory: EROFS commits, overlay mounts that honour
whiteouts and opaque dirs, usage, crash leftovers, persistence, and release of every mount."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from runwasm.oci.erofs.reader import ErofsImage
from runwasm.oci.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from runwasm.oci.mounts import syscalls
from runwasm.oci.snapshotter.meta import Kind
from runwasm.oci.snapshotter.store import LAYER, MountSpec, SnapshotStore

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting EROFS and overlay needs root")


def _upper(mounts: list[MountSpec]) -> Path:
    m = mounts[0]
    if m.type == "bind":
        return Path(m.source)
    return Path(next(o for o in m.options if o.startswith("upperdir="))[len("upperdir="):])


def _mount(mounts: list[MountSpec], target: Path) -> None:
    m = mounts[0]
    opts = ",".join(("bind", *[o for o in m.options if o != "rbind"])) if m.type == "bind" else ",".join(m.options)
    subprocess.run(["mount", "-t", m.type, "-o", opts, m.source, str(target)], check=True)


def test_commit_writes_an_erofs_image_and_persists(tmp_path: Path) -> None:
    st = SnapshotStore(tmp_path / "root", clock=lambda: 1_000_000_123)
    mounts = st.prepare("a", "", {"l": "1"})
    assert mounts == [MountSpec("bind", str(tmp_path / "root/s/1/fs"), ("rw", "rbind"))]
    up = _upper(mounts)
    (up / "etc").mkdir()
    (up / "etc/f").write_bytes(b"x" * 10000)
    assert st.usage("a").inodes == 3
    assert st.usage("a").size >= 10000
    snap = st.commit("L1", "a", {"c": "1"})
    assert snap.kind is Kind.COMMITTED
    assert snap.inodes == 3
    img = tmp_path / "root/s/1" / LAYER
    with ErofsImage(img) as e:
        assert e.read_data(e.lookup("etc/f")) == b"x" * 10000
    assert not (tmp_path / "root/s/1/fs").exists(), "the upper dir goes away on commit"
    assert st.usage("L1").size == os.stat(img).st_blocks * 512
    again = SnapshotStore(tmp_path / "root")  # a restarted daemon
    assert again.stat("L1") == snap
    assert [s.key for s in again.walk(["kind==committed"])] == ["L1"]


def test_errors_leave_the_store_unchanged(tmp_path: Path) -> None:
    st = SnapshotStore(tmp_path / "root")
    with pytest.raises(NotFoundError):
        st.prepare("a", "missing", {})
    assert sorted(os.listdir(tmp_path / "root/s")) == []
    st.view("v", "", {})
    with pytest.raises(FailedPreconditionError, match="not active"):
        st.commit("x", "v", {})
    with pytest.raises(InvalidArgumentError, match="not an active snapshot"):
        st.snapshot_of_mounts([MountSpec("bind", "/etc", ("ro",))])


def test_cleanup_removes_unreferenced_and_crash_leftovers(tmp_path: Path) -> None:
    st = SnapshotStore(tmp_path / "root")
    st.prepare("a", "", {})
    st.commit("L1", "a", {})
    (tmp_path / "root/s/99").mkdir()  # no snapshot has id 99
    (tmp_path / "root/s/.rm-7").mkdir()  # a Remove interrupted after the rename
    (tmp_path / "root/s/1/.tmp-layer.erofs").write_bytes(b"half")
    (tmp_path / "root/s/1/fs").mkdir()  # a commit interrupted after the save
    removed = st.cleanup()
    assert sorted(Path(p).name for p in removed) == [".rm-7", ".tmp-layer.erofs", "99", "fs"]
    assert sorted(os.listdir(tmp_path / "root/s/1")) == [LAYER]


@root_only
@pytest.mark.privileged
def test_overlay_of_erofs_layers_honours_whiteouts_and_releases_mounts(no_leaks: Path) -> None:
    tmp = no_leaks
    st = SnapshotStore(tmp / "root")
    up = _upper(st.prepare("a", "", {}))
    (up / "gone").write_text("x")
    (up / "d").mkdir()
    (up / "d/old").write_text("o")
    (up / "keep").write_text("1")
    st.commit("L1", "a", {})
    mounts = st.prepare("b", "L1", {})
    assert mounts[0].type == "overlay"
    assert f"lowerdir={tmp / 'root/m/1'}" in mounts[0].options
    assert syscalls.is_mountpoint(tmp / "root/m/1")
    up = _upper(mounts)
    os.mknod(up / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))  # what the walking differ writes
    (up / "d").mkdir()
    os.setxattr(up / "d", "trusted.overlay.opaque", b"y")
    (up / "d/new").write_text("n")
    st.commit("L2", "b", {})
    view = st.view("v", "L2", {})
    assert view[0].type == "overlay"
    assert view[0].options[-1] == f"lowerdir={tmp / 'root/m/2'}:{tmp / 'root/m/1'}"
    target = tmp / "t"
    target.mkdir()
    _mount(view, target)
    try:
        assert sorted(os.listdir(target)) == ["d", "keep"]
        assert os.listdir(target / "d") == ["new"]
    finally:
        subprocess.run(["umount", str(target)], check=True)
    with pytest.raises(FailedPreconditionError, match="parent of"):
        st.remove("L1")
    for key in ("v", "L2", "L1"):
        st.remove(key)
    assert os.listdir(tmp / "root/s") == []
    assert os.listdir(tmp / "root/m") == []


@root_only
@pytest.mark.privileged
def test_a_busy_layer_mount_is_not_removed(no_leaks: Path) -> None:
    st = SnapshotStore(no_leaks / "root")
    st.prepare("a", "", {})
    st.commit("L1", "a", {})
    st.view("v", "L1", {})
    st.remove("v")
    fd = os.open(no_leaks / "root/m/1", os.O_RDONLY)  # pins the mount: umount gives EBUSY
    try:
        with pytest.raises(FailedPreconditionError, match="busy"):
            st.remove("L1")
        assert st.stat("L1").kind is Kind.COMMITTED
    finally:
        os.close(fd)
    st.remove("L1")
    assert not (no_leaks / "root/m/1").exists()


def _tar(entries: list[tuple[str, bytes]]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_apply_layer_zstd_in_one_pass_then_commit(tmp_path: Path) -> None:
    import hashlib
    import io

    import zstandard

    from runwasm.oci.mediatypes import LayerKind

    st = SnapshotStore(tmp_path / "root")
    mounts = st.prepare("a", "", {})
    raw = _tar([("d/f", b"zstd!"), ("d/.wh.x", b"")])
    blob = io.BytesIO(zstandard.ZstdCompressor().compress(raw))
    applied = st.apply_layer(mounts, blob, LayerKind.TAR_ZSTD, "sha256:" + "a" * 64)
    assert (applied.diff_id, applied.size) == ("sha256:" + hashlib.sha256(raw).hexdigest(), len(raw))
    with pytest.raises(FailedPreconditionError, match="not empty"):
        st.apply_layer(mounts, io.BytesIO(raw), LayerKind.TAR, "sha256:" + "b" * 64)
    st.commit("L", "a", {})
    with ErofsImage(tmp_path / "root/s/1" / LAYER) as e:
        assert e.read_data(e.lookup("d/f")) == b"zstd!"
        assert stat.S_ISCHR(e.lookup("d/x").mode), "an AUFS whiteout becomes an overlay whiteout"


def test_apply_layer_refuses_traversal_and_leaves_nothing(tmp_path: Path) -> None:
    import io

    from runwasm.oci.mediatypes import LayerKind

    st = SnapshotStore(tmp_path / "root")
    mounts = st.prepare("a", "", {})
    with pytest.raises(InvalidArgumentError, match=r"contains '\.\.'"):
        st.apply_layer(mounts, io.BytesIO(_tar([("../../etc/x", b"x")])), LayerKind.TAR, "sha256:" + "c" * 64)
    assert sorted(os.listdir(tmp_path / "root/s/1")) == ["fs", "work"]
    with pytest.raises(InvalidArgumentError, match="bad magic"):
        st.apply_layer(mounts, io.BytesIO(bytes(8192)), LayerKind.EROFS, "sha256:" + "d" * 64)
    assert sorted(os.listdir(tmp_path / "root/s/1")) == ["fs", "work"]


def test_too_many_layers_for_one_mount_option_page_is_refused(tmp_path: Path) -> None:
    from runwasm.oci.snapshotter.meta import Kind as K

    st = SnapshotStore(tmp_path / "root")
    parent = ""
    for i in range(200):  # table only: the refusal comes before any layer is mounted
        st.table.create(f"a{i}", parent, K.ACTIVE, {}, 0)
        st.table.commit(f"L{i}", f"a{i}", {}, 1, 0)
        parent = f"L{i}"
    with pytest.raises(FailedPreconditionError, match="mount.2. .the runc shim. takes at most 4095"):
        st.prepare("top", parent, {})
    assert "top" not in st.table.by_key
