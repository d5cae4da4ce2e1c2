from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures.oci.imagebuild import Entry, tar_layer, write_image
from runwasm.oci.errors import FailedPreconditionError, InvalidArgumentError
from runwasm.oci.images import ImageStore
from runwasm.oci.layout_import import import_layout
from runwasm.oci.mounts.capabilities import probe
from runwasm.oci.mounts.rootfs import cleanup_recorded, prepare_rootfs
from runwasm.oci.mounts.syscalls import is_mountpoint
from runwasm.oci.resolve import resolve
from runwasm.oci.store import ContentStore

pytestmark = [pytest.mark.privileged,
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")]


@pytest.fixture
def store(no_leaks: Path) -> ContentStore:
    tmp = no_leaks
    l1 = tar_layer([Entry("bin/sh", data=b"sh", mode=0o755), Entry("etc/os", data=b"one"),
                    Entry("etc/gone", data=b"g"), Entry("opq/a", data=b"a")])
    l2 = tar_layer([Entry("etc/os", data=b"two"), Entry("etc/.wh.gone"), Entry("opq/.wh..wh..opq"),
                    Entry("opq/b", data=b"b")], "zstd")
    write_image(tmp / "i.tar", [l1, l2])
    cs = ContentStore(tmp / "root")
    import_layout(cs, ImageStore(cs.root), tmp / "i.tar")
    return cs


def _check_view(rootfs: Path) -> None:
    assert sorted(os.listdir(rootfs)) == ["bin", "etc", "opq"]
    assert sorted(os.listdir(rootfs / "etc")) == ["os"]
    assert (rootfs / "etc/os").read_text() == "two"
    assert sorted(os.listdir(rootfs / "opq")) == ["b"]


@pytest.mark.parametrize("mode", ["auto", "erofs", "dirs", "flat"])
def test_prepare_and_release(store: ContentStore, mode: str) -> None:
    target = store.root.parent / "rootfs"
    handle = prepare_rootfs(store, "docker.io/test/img:latest", target, "c1", mode=mode)
    assert handle.method == ("erofs" if mode == "auto" else mode)
    _check_view(target)
    (target / "written").write_text("w")
    (target / "etc/os").unlink()
    if mode != "flat":
        assert is_mountpoint(target)
    handle.release()
    assert not target.exists()
    assert not (store.root / "c" / "c1").exists()
    assert not handle.table_path.exists()
    handle.release()  # idempotent


def test_crash_recovery_via_recorded_table(store: ContentStore) -> None:
    target = store.root.parent / "rootfs"
    prepare_rootfs(store, "test/img", target, "crashed")
    assert is_mountpoint(target)
    # the shim died: only the state dir survives
    assert cleanup_recorded(store.root / "mounts") == ["crashed"]
    assert not is_mountpoint(target)
    assert not target.exists()
    assert cleanup_recorded(store.root / "mounts") == []


def test_refuses_double_prepare_and_non_empty_target(store: ContentStore) -> None:
    target = store.root.parent / "rootfs"
    handle = prepare_rootfs(store, "test/img", target, "c2")
    try:
        with pytest.raises(FailedPreconditionError, match="already prepared"):
            prepare_rootfs(store, "test/img", store.root.parent / "other", "c2")
        with pytest.raises(FailedPreconditionError, match="not empty"):
            prepare_rootfs(store, "test/img", target, "c3")
    finally:
        handle.release()


@pytest.mark.parametrize("mode", ["erofs", "dirs", "flat"])
def test_corrupt_layer_leaves_nothing(store: ContentStore, mode: str) -> None:
    layer = resolve(store, ImageStore(store.root).get("test/img").target).manifest.layers[0]
    path = store.path(layer.digest)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # inside the gzip/zstd trailer or data
    path.write_bytes(bytes(data))
    target = store.root.parent / "rootfs"
    with pytest.raises(InvalidArgumentError, match="failed to decompress|diff id mismatch"):
        prepare_rootfs(store, "test/img", target, "bad", mode=mode)
    assert not target.exists()
    assert not (store.root / "mounts" / "bad.json").exists()
    assert not (store.root / "c" / "bad").exists()


def test_capabilities_probe_on_this_kernel() -> None:
    caps = probe(refresh=True)
    if not caps.erofs:
        pytest.skip("kernel lacks EROFS")
    assert caps.erofs_file or caps.erofs_loop
    assert caps.overlay


@pytest.mark.parametrize("mode", ["erofs", "dirs", "flat"])
def test_multilayer_fixture(no_leaks: Path, mode: str) -> None:
    from tests.conftest import built_fixture

    cs = ContentStore(no_leaks / "root")
    import_layout(cs, ImageStore(cs.root), built_fixture("oci", "multilayer.tar"))
    target = no_leaks / "rootfs"
    handle = prepare_rootfs(cs, "runwasm/multilayer", target, f"fx-{mode}", mode=mode)
    try:
        assert (target / "etc/os-release").read_text() == "ID=top\n"
        assert not (target / "etc/motd").exists()
        assert not (target / "etc/motd").is_symlink()
        assert sorted(os.listdir(target / "var/cache")) == ["c"]
        assert os.stat(target / "etc/hosts").st_ino == os.stat(target / "etc/hosts.link").st_ino
        assert os.getxattr(target / "etc/hosts", "user.origin") == b"base"
        assert os.major(os.lstat(target / "dev/null").st_rdev) == 1
    finally:
        handle.release()
