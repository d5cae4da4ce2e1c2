"""Mount option parsing (containerd's parseMountOptions) and a real rootfs mount."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runwasm.linux import syscalls as m
from runwasm.linux.mounts import MountOptions, parse_options
from runwasm.shim import mounts
from runwasm.shim.errors import InvalidArgumentError


@pytest.mark.parametrize(("options", "flags", "prop", "data"), [
    ([], 0, 0, ""),
    (["ro"], m.MS_RDONLY, 0, ""),
    (["ro", "rw"], 0, 0, ""),
    (["rw", "ro"], m.MS_RDONLY, 0, ""),
    (["bind"], m.MS_BIND, 0, ""),
    (["rbind"], m.MS_BIND | m.MS_REC, 0, ""),
    (["nosuid", "nodev", "noexec"], m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC, 0, ""),
    (["nosuid", "suid"], 0, 0, ""),
    (["nodev", "dev", "noexec", "exec"], 0, 0, ""),
    (["relatime"], m.MS_RELATIME, 0, ""),
    (["relatime", "norelatime"], 0, 0, ""),
    (["strictatime", "nostrictatime"], 0, 0, ""),
    (["noatime", "atime"], 0, 0, ""),
    (["nodiratime"], m.MS_NODIRATIME, 0, ""),
    (["sync"], m.MS_SYNCHRONOUS, 0, ""),
    (["sync", "async"], 0, 0, ""),
    (["dirsync", "mand"], m.MS_DIRSYNC | m.MS_MANDLOCK, 0, ""),
    (["mand", "nomand"], 0, 0, ""),
    (["remount", "defaults"], m.MS_REMOUNT, 0, ""),
    (["private"], 0, m.MS_PRIVATE, ""),
    (["rprivate"], 0, m.MS_PRIVATE | m.MS_REC, ""),
    (["rslave"], 0, m.MS_SLAVE | m.MS_REC, ""),
    (["shared"], 0, m.MS_SHARED, ""),
    (["rshared"], 0, m.MS_SHARED | m.MS_REC, ""),
    (["lowerdir=/a:/b", "upperdir=/u", "workdir=/w"], 0, 0, "lowerdir=/a:/b,upperdir=/u,workdir=/w"),
    (["ro", "size=10m", "rbind", "mode=755", "rslave"], m.MS_RDONLY | m.MS_BIND | m.MS_REC,
     m.MS_SLAVE | m.MS_REC, "size=10m,mode=755"),
])
def test_parse_options(options: list[str], flags: int, prop: int, data: str) -> None:
    """The shim mounts containerd's rootfs with the Linux executor's parser."""
    assert parse_options(options) == MountOptions(flags, (prop,) if prop else (), data)


def test_flag_values_are_linux_constants() -> None:
    assert (m.MS_RDONLY, m.MS_NOSUID, m.MS_NODEV, m.MS_NOEXEC) == (1, 2, 4, 8)
    assert (m.MS_BIND, m.MS_REC, m.MS_PRIVATE, m.MS_SLAVE, m.MS_SHARED) == (4096, 16384, 262144, 524288, 1048576)


def _mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


@pytest.mark.privileged
def test_mount_rootfs_ro_bind_and_unmount(tmp_path: Path) -> None:
    src, target = tmp_path / "src", tmp_path / "rootfs"
    src.mkdir()
    target.mkdir()
    (src / "f").write_text("x")
    made = mounts.mount_rootfs([mounts.MountSpec("bind", str(src), ("rbind", "ro"))], str(target))
    try:
        assert made == [str(target)]
        assert (target / "f").read_text() == "x"
        with pytest.raises(OSError, match="Read-only"):
            (target / "g").write_text("y")
    finally:
        mounts.unmount_all(made)
    assert not _mounted(target)
    mounts.unmount_all(made)  # idempotent


@pytest.mark.privileged
def test_mount_failure_is_invalid_argument_and_undone(tmp_path: Path) -> None:
    src, target = tmp_path / "src", tmp_path / "rootfs"
    src.mkdir()
    target.mkdir()
    specs = [mounts.MountSpec("bind", str(src), ("bind",)), mounts.MountSpec("nosuchfs", "none", ())]
    with pytest.raises(InvalidArgumentError, match="failed to mount rootfs"):
        mounts.mount_rootfs(specs, str(target))
    assert not _mounted(target)
