"""A planned EROFS rootfs mounted in a private mount namespace, on the real kernel.

EROFS images come from runwasm's own writer (``runwasm.oci.erofs.from_dir``). Checked: the merged
tree is readable through the server's view, nothing is mounted in this (the host's) namespace,
the loop fallback attaches and frees its loop device, a failure half-way leaves no mount and no
loop device, and a dm-verity layer is refused where dm-verity cannot be activated.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runwasm.oci.erofs.from_dir import dir_to_erofs
from runwasm.oci.mounts import syscalls as ms
from runwasm.shim.common import rootfs_plan as rp
from runwasm.shim.common.errors import FailedPreconditionError, InvalidArgumentError
from runwasm.shim.server import private_rootfs as pr

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root"),
    pytest.mark.skipif("erofs" not in Path("/proc/filesystems").read_text(), reason="the kernel has no EROFS"),
]


def _image(tmp: Path, name: str, files: dict[str, bytes]) -> Path:
    src = tmp / f"src-{name}"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    out = tmp / f"{name}.erofs"
    dir_to_erofs(src, out, uuid=bytes(16))
    return out


def _host_mounts_under(tmp: Path) -> list[str]:
    """Mounts of this (the host's) namespace at or from a path under ``tmp`` (other tests on the
    machine mount and unmount elsewhere at the same time)."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(tmp) in line]


def _loops_backed_by(paths: set[str]) -> list[str]:
    out = []
    for b in Path("/sys/block").glob("loop*"):
        try:
            if (b / "loop" / "backing_file").read_text().strip() in paths:
                out.append(b.name)
        except OSError:
            continue
    return out


def _wait_no_loops(paths: set[str], timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _loops_backed_by(paths)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    b = tmp_path / "bundle"
    (b / "rootfs").mkdir(parents=True)
    return b


def _plan(bundle: Path, lower_top: Path, lower_base: Path) -> rp.Plan:
    snap = bundle.parent / "snap"
    return rp.plan([("erofs", str(lower_top), "", ["ro", "loop"]), ("erofs", str(lower_base), "", ["ro", "loop"]),
                    ("format/mkdir/overlay", "overlay", "",
                     [f"X-containerd.mkdir.path={snap}:0755", f"X-containerd.mkdir.path={snap}/fs:0755",
                      f"X-containerd.mkdir.path={snap}/work:0700", "lowerdir={{ overlay 0 1 }}",
                      f"upperdir={snap}/fs", f"workdir={snap}/work"])],
                   str(bundle / "rootfs"), str(bundle / "layers"))


@pytest.mark.parametrize("force_loop", [False, True], ids=["file-backed", "loop-fallback"])
def test_mounted_privately_and_released(tmp_path: Path, bundle: Path, monkeypatch: pytest.MonkeyPatch,
                                        force_loop: bool) -> None:
    monkeypatch.setattr(ms, "_force_loop", force_loop)  # as after an ENOTBLK from a kernel without file-backed EROFS
    base = _image(tmp_path, "base", {"etc/os": b"base\n", "bin/tool": b"old"})
    top = _image(tmp_path, "top", {"bin/tool": b"new"})
    priv = pr.mount_private(_plan(bundle, top, base), "c1")
    try:
        assert priv.methods == (("loop+fsmount",) * 2 if force_loop else ("fsmount",) * 2) + ("overlay",)
        assert (priv.view / "etc/os").read_bytes() == b"base\n"
        assert (priv.view / "bin/tool").read_bytes() == b"new"
        (priv.view / "written").write_bytes(b"upper")  # the writable upper is the snapshot's fs dir
        assert (tmp_path / "snap/fs/written").read_bytes() == b"upper"
        assert _host_mounts_under(tmp_path) == []  # nothing of it in the host's namespace
        assert os.listdir(bundle / "rootfs") == []
        assert len(_loops_backed_by({str(base), str(top)})) == (2 if force_loop else 0)
    finally:
        priv.close()
    assert _wait_no_loops({str(base), str(top)}) == []


def test_failure_half_way_leaves_nothing(tmp_path: Path, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ms, "_force_loop", True)
    base = _image(tmp_path, "base", {"a": b"a"})
    bad = tmp_path / "bad.erofs"
    bad.write_bytes(b"\0" * 8192)  # no EROFS superblock
    with pytest.raises(InvalidArgumentError) as exc:
        pr.mount_private(_plan(bundle, bad, base), "c2")
    assert "container 'c2'" in str(exc.value)
    assert "erofs" in str(exc.value)
    assert _host_mounts_under(tmp_path) == []
    assert _wait_no_loops({str(base), str(bad)}) == []


@pytest.mark.skipif(pr.dmverity_available(), reason="dm-verity is available here: the refusal path is not taken")
def test_dmverity_layer_refused_without_dm_verity(tmp_path: Path, bundle: Path) -> None:
    img = _image(tmp_path, "v", {"a": b"a"})
    sidecar = tmp_path / "v.erofs.dmverity"
    sidecar.write_text('{"roothash": "' + "ab" * 32 + '", "hashoffset": 4096}')
    plan = rp.plan([("erofs", str(img), "", ["ro", f"X-containerd.dmverity={sidecar}"])], str(bundle / "rootfs"),
                   str(bundle / "layers"))
    with pytest.raises(FailedPreconditionError, match="refusing to mount it unverified"):
        pr.mount_private(plan, "c3")


def test_bad_dmverity_sidecar(tmp_path: Path, bundle: Path) -> None:
    img = _image(tmp_path, "v", {"a": b"a"})
    sidecar = tmp_path / "v.erofs.dmverity"
    sidecar.write_text('{"roothash": "zz"}')
    plan = rp.plan([("erofs", str(img), "", ["ro", f"X-containerd.dmverity={sidecar}"])], str(bundle / "rootfs"),
                   str(bundle / "layers"))
    with pytest.raises(InvalidArgumentError, match="expected JSON with roothash and hashoffset"):
        pr.mount_private(plan, "c4")
