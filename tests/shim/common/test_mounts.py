"""Mount option parsing (containerd's parseMountOptions) and a real rootfs mount."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from runwasm.linux import syscalls as m
from runwasm.linux.errors import InvalidArgumentError as LinuxInvalidArgument
from runwasm.linux.mounts import MountOptions, parse_options
from runwasm.shim.common import mounts
from runwasm.shim.common.errors import InvalidArgumentError


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


@pytest.mark.parametrize(("options", "attr_set", "attr_clr"), [
    (["rro"], m.MOUNT_ATTR_RDONLY, 0),
    (["rro", "rrw"], 0, m.MOUNT_ATTR_RDONLY),
    (["rrw", "rro"], m.MOUNT_ATTR_RDONLY, 0),
    (["rnosuid", "rnodev", "rnoexec"], m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV | m.MOUNT_ATTR_NOEXEC, 0),
    (["rsuid", "rdev", "rexec"], 0, m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV | m.MOUNT_ATTR_NOEXEC),
    (["rnodiratime", "rnosymfollow"], m.MOUNT_ATTR_NODIRATIME | m.MOUNT_ATTR_NOSYMFOLLOW, 0),
    (["rnoatime"], m.MOUNT_ATTR_NOATIME, m.MOUNT_ATTR__ATIME),
    (["rnoatime", "rstrictatime"], m.MOUNT_ATTR_STRICTATIME, m.MOUNT_ATTR__ATIME),
    (["rstrictatime", "rnostrictatime"], m.MOUNT_ATTR_RELATIME, m.MOUNT_ATTR__ATIME),
    (["rnoatime", "ratime", "rro"], m.MOUNT_ATTR_RDONLY, m.MOUNT_ATTR__ATIME),
])
def test_recursive_attributes(options: list[str], attr_set: int, attr_clr: int) -> None:
    o = parse_options(["rbind", *options], "bind", "mounts[0]")
    assert (o.attr_set, o.attr_clr, o.data, o.recursive) == (attr_set, attr_clr, "", True)


def test_every_spec_recursive_option_is_known() -> None:
    from runwasm.linux.mounts import KNOWN_OPTIONS

    spec = ("rro rrw rnosuid rsuid rnodev rdev rnoexec rexec rnodiratime rdiratime rrelatime rnorelatime "
            "rnoatime ratime rstrictatime rnostrictatime rnosymfollow rsymfollow").split()
    assert set(spec) <= set(KNOWN_OPTIONS)


@pytest.mark.parametrize(("options", "fstype", "needle"), [
    (["rbind", "bogus"], "bind", "unknown mount option 'bogus' (a bind mount takes no filesystem data)"),
    (["rbind", "size=1k"], "bind", "unknown mount option 'size=1k' (a bind mount takes no"),
    (["nosuid", "newinstance"], "tmpfs", "unknown mount option 'newinstance' (not a mount flag"),
    (["ro", "memory"], "cgroup", "takes no cgroup options"),
    (["idmap"], "bind", "option 'idmap' is not supported by runwasm"),
])
def test_spec_mount_options_runwasm_does_not_understand_are_refused(options: list[str], fstype: str,
                                                                    needle: str) -> None:
    with pytest.raises(LinuxInvalidArgument, match=re.escape(needle)) as info:
        parse_options(options, fstype, "mounts[3] (destination '/x')")
    assert "mounts[3] (destination '/x')" in str(info.value)


@pytest.mark.parametrize(("options", "fstype", "data"), [
    (["nosuid", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"], "devpts", "newinstance,ptmxmode=0666,mode=0620,gid=5"),
    (["nosuid", "strictatime", "mode=755", "size=65536k", "noswap"], "tmpfs", "mode=755,size=65536k,noswap"),
    (["lowerdir=/a:/b", "upperdir=/u", "workdir=/w", "userxattr"], "overlay", "lowerdir=/a:/b,upperdir=/u,workdir=/w,userxattr"),
    (["nosuid", "noexec", "nodev"], "mqueue", ""),
])
def test_spec_filesystem_data_is_passed_on(options: list[str], fstype: str, data: str) -> None:
    assert parse_options(options, fstype, "mounts[0]").data == data
