"""Spec mounts (``mounts[]``): option parsing and mounting inside the new rootfs.

Runs in the workload after the rootfs is bound onto itself and before pivot_root, so sources
are host paths and destinations are resolved inside the rootfs without following symlinks
out of it (``secure_join``). Bind mounts with flags need a second ``MS_REMOUNT|MS_BIND`` call
(the kernel ignores flags on the first bind); propagation options are a separate mount call.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from runwasm.linux import syscalls as sc
from runwasm.linux.errors import InvalidArgumentError, SetupError
from runwasm.oci.runtime_spec import Mount

# option -> (clear?, flag) — mount(2) flag words (containerd core/mount/mount_linux.go,
# runc libcontainer/specconv); "recursive" attributes are in _RECURSIVE below
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, sc.MS_SYNCHRONOUS), "atime": (True, sc.MS_NOATIME), "bind": (False, sc.MS_BIND),
    "defaults": (False, 0), "dev": (True, sc.MS_NODEV), "diratime": (True, sc.MS_NODIRATIME),
    "dirsync": (False, sc.MS_DIRSYNC), "exec": (True, sc.MS_NOEXEC), "mand": (False, sc.MS_MANDLOCK),
    "noatime": (False, sc.MS_NOATIME), "nodev": (False, sc.MS_NODEV), "nodiratime": (False, sc.MS_NODIRATIME),
    "noexec": (False, sc.MS_NOEXEC), "nomand": (True, sc.MS_MANDLOCK), "norelatime": (True, sc.MS_RELATIME),
    "nostrictatime": (True, sc.MS_STRICTATIME), "nosuid": (False, sc.MS_NOSUID),
    "rbind": (False, sc.MS_BIND | sc.MS_REC), "relatime": (False, sc.MS_RELATIME),
    "remount": (False, sc.MS_REMOUNT), "ro": (False, sc.MS_RDONLY), "rw": (True, sc.MS_RDONLY),
    "strictatime": (False, sc.MS_STRICTATIME), "suid": (True, sc.MS_NOSUID), "sync": (False, sc.MS_SYNCHRONOUS),
    "nosymfollow": (False, sc.MS_NOSYMFOLLOW), "symfollow": (True, sc.MS_NOSYMFOLLOW),
    "lazytime": (False, sc.MS_LAZYTIME), "nolazytime": (True, sc.MS_LAZYTIME),
    "silent": (False, sc.MS_SILENT), "loud": (True, sc.MS_SILENT),
    "iversion": (False, sc.MS_I_VERSION), "noiversion": (True, sc.MS_I_VERSION),
    "acl": (False, sc.MS_POSIXACL), "noacl": (True, sc.MS_POSIXACL),
}
PROPAGATION: dict[str, int] = {
    "private": sc.MS_PRIVATE, "shared": sc.MS_SHARED, "slave": sc.MS_SLAVE, "unbindable": sc.MS_UNBINDABLE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC, "rshared": sc.MS_SHARED | sc.MS_REC,
    "rslave": sc.MS_SLAVE | sc.MS_REC, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
_ATIME = sc.MOUNT_ATTR__ATIME
# the runtime spec's recursive attributes: option -> (attr_set, attr_clr) for mount_setattr(2)
# with AT_RECURSIVE. The access-time mode is one field: setting one clears the whole field; the
# "clear" spellings (ratime, rnorelatime, rnostrictatime) return it to relatime, the kernel's
# default (what runc does).
RECURSIVE: dict[str, tuple[int, int]] = {
    "rro": (sc.MOUNT_ATTR_RDONLY, 0), "rrw": (0, sc.MOUNT_ATTR_RDONLY),
    "rnosuid": (sc.MOUNT_ATTR_NOSUID, 0), "rsuid": (0, sc.MOUNT_ATTR_NOSUID),
    "rnodev": (sc.MOUNT_ATTR_NODEV, 0), "rdev": (0, sc.MOUNT_ATTR_NODEV),
    "rnoexec": (sc.MOUNT_ATTR_NOEXEC, 0), "rexec": (0, sc.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (sc.MOUNT_ATTR_NODIRATIME, 0), "rdiratime": (0, sc.MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (sc.MOUNT_ATTR_NOSYMFOLLOW, 0), "rsymfollow": (0, sc.MOUNT_ATTR_NOSYMFOLLOW),
    "rrelatime": (sc.MOUNT_ATTR_RELATIME, _ATIME), "ratime": (sc.MOUNT_ATTR_RELATIME, _ATIME),
    "rnorelatime": (sc.MOUNT_ATTR_RELATIME, _ATIME), "rnostrictatime": (sc.MOUNT_ATTR_RELATIME, _ATIME),
    "rnoatime": (sc.MOUNT_ATTR_NOATIME, _ATIME), "rstrictatime": (sc.MOUNT_ATTR_STRICTATIME, _ATIME),
}
UNSUPPORTED: dict[str, str] = {
    "tmpcopyup": "copying the image's files into a tmpfs is not implemented",
    "idmap": "id-mapped mounts are not implemented", "ridmap": "id-mapped mounts are not implemented",
}
# bare (no "=") filesystem data words passed on for these types; "key=value" words are passed on
# for any non-bind type (the kernel's fs_context parser validates them)
FS_WORDS: dict[str, frozenset[str]] = {
    "tmpfs": frozenset({"noswap", "inode32", "inode64", "quota", "usrquota", "grpquota"}),
    "devpts": frozenset({"newinstance"}),
    "overlay": frozenset({"userxattr", "volatile"}),
    "cgroup2": frozenset({"nsdelegate", "memory_recursiveprot", "favordynmods", "memory_localevents"}),
}
# option words runwasm understands (the runtime-spec features document's mountOptions)
KNOWN_OPTIONS: tuple[str, ...] = tuple(sorted({*_FLAGS, *PROPAGATION, *RECURSIVE}))


@dataclass(frozen=True, slots=True)
class MountOptions:
    """A mount's option strings turned into mount(2) flags, propagation changes and data."""

    flags: int
    propagation: tuple[int, ...]
    data: str
    attr_set: int = 0  # mount_setattr(2) attributes applied recursively after the mount
    attr_clr: int = 0

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)

    @property
    def recursive(self) -> bool:
        return bool(self.attr_set or self.attr_clr)


def parse_options(options: Sequence[str], fstype: str | None = None, where: str = "mount") -> MountOptions:
    """Split OCI mount options into mount(2) flags, propagation flags, recursive attributes and
    the data string.

    ``fstype=None`` is containerd's rule for the rootfs mounts it hands us: any other word is
    filesystem data. With ``fstype`` (a spec mount; ``"bind"`` for bind mounts) every word must
    be understood, else InvalidArgumentError naming ``where`` and the option: a bind mount takes
    no data (the kernel would drop it), other types take ``key=value`` words and the bare words
    of ``FS_WORDS[fstype]``.
    """
    flags = attr_set = attr_clr = 0
    prop: list[int] = []
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            clear, f = _FLAGS[opt]
            flags = flags & ~f if clear else flags | f
        elif opt in PROPAGATION:
            prop.append(PROPAGATION[opt])
        elif opt in RECURSIVE:
            s, c = RECURSIVE[opt]
            attr_set = (attr_set & ~c & ~s) | s
            attr_clr = (attr_clr & ~s) | c
        elif opt in UNSUPPORTED:
            raise InvalidArgumentError(f"failed to apply {where}: option {opt!r} is not supported by runwasm "
                                       f"({UNSUPPORTED[opt]})")
        else:
            data.append(opt)
    if fstype is not None:
        _check_data(data, fstype, flags & sc.MS_BIND != 0, where)
    return MountOptions(flags=flags, propagation=tuple(prop), data=",".join(data),
                        attr_set=attr_set, attr_clr=attr_clr)


def _check_data(data: Sequence[str], fstype: str, bind: bool, where: str) -> None:
    for opt in data:
        if bind or fstype in ("bind", "rbind"):
            reason = "a bind mount takes no filesystem data"
        elif fstype == "cgroup":
            reason = "runwasm mounts the container's own cgroup and takes no cgroup options"
        elif "=" in opt.strip("="):
            continue
        elif opt in FS_WORDS.get(fstype, ()):
            continue
        else:
            reason = f"not a mount flag, propagation or recursive attribute, nor a {fstype} option runwasm knows"
        raise InvalidArgumentError(f"failed to apply {where}: unknown mount option {opt!r} ({reason})")


def secure_join(root: str, unsafe: str) -> str:
    """Resolve ``unsafe`` under ``root`` as if ``root`` were ``/``: symlinks (absolute or with
    ``..``) never escape it. Missing components are kept literally."""
    parts = [p for p in unsafe.split("/") if p and p != "."]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 255:
                raise SetupError(f"failed to resolve {unsafe!r} in {root!r}: too many symlinks")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _create_target(dest: str, source_is_file: bool) -> None:
    try:
        if source_is_file:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if not os.path.exists(dest):
                os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        else:
            os.makedirs(dest, exist_ok=True)
    except OSError as err:
        raise SetupError(f"failed to create mountpoint {dest!r}: [errno {err.errno}] {err.strerror}") from err


def _mount(src: str | None, dest: str, fstype: str | None, flags: int, data: str | None, what: str) -> None:
    try:
        sc.mount(src, dest, fstype, flags, data)
    except OSError as err:
        raise SetupError(f"failed to mount {what} on {dest!r}: [errno {err.errno}] {os.strerror(err.errno or 0)}") from err


def mount_one(rootfs: str, m: Mount, index: int, cgroup_dirs: Mapping[str, str]) -> None:
    """Mount spec ``mounts[index]`` under ``rootfs``; errors name the index and destination."""
    what = f"mounts[{index}] ({m.type or 'bind'} {m.source!r})"
    opts = parse_options(m.options, m.type or "bind", f"mounts[{index}] (destination {m.destination!r})")
    dest = secure_join(rootfs, m.destination)
    if m.type == "cgroup":
        _mount_cgroup(dest, opts, cgroup_dirs, what)
    elif opts.is_bind or m.type in ("bind", "rbind"):
        flags = opts.flags | sc.MS_BIND | (sc.MS_REC if m.type == "rbind" else 0)
        if not os.path.exists(m.source):
            raise SetupError(f"failed to mount {what} on {dest!r}: source {m.source!r} does not exist")
        _create_target(dest, not os.path.isdir(m.source))
        _mount(m.source, dest, None, flags & (sc.MS_BIND | sc.MS_REC), None, what)
        extra = flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
        if extra:
            # flags on a bind take a remount; keep the locked flags the source already has
            extra |= _locked_flags(dest)
            _mount(None, dest, None, sc.MS_REMOUNT | sc.MS_BIND | extra, None, what + " remount")
    else:
        _create_target(dest, False)
        _mount(m.source or m.type, dest, m.type, opts.flags & ~sc.MS_REMOUNT, opts.data or None, what)
    if opts.recursive:
        set_recursive(dest, opts, what)
    for p in opts.propagation:
        _mount(None, dest, None, p, None, what + " propagation")


def set_recursive(dest: str, opts: MountOptions, what: str) -> None:
    """Apply the recursive attributes (``rro``...) to the mount at ``dest`` and every submount."""
    try:
        sc.mount_setattr(dest, opts.attr_set, opts.attr_clr, recursive=True)
    except OSError as err:
        hint = " (mount_setattr needs Linux 5.12 or later)" if err.errno == errno.ENOSYS else ""
        raise SetupError(f"failed to set recursive mount attributes of {what} on {dest!r}: "
                         f"[errno {err.errno}] {os.strerror(err.errno or 0)}{hint}") from err


def _locked_flags(path: str) -> int:
    st = os.statvfs(path)
    out = 0
    for bit, flag in ((os.ST_NOSUID, sc.MS_NOSUID), (os.ST_NODEV, sc.MS_NODEV), (os.ST_NOEXEC, sc.MS_NOEXEC)):
        if st.f_flag & bit:
            out |= flag
    return out


def _mount_cgroup(dest: str, opts: MountOptions, cgroup_dirs: Mapping[str, str], what: str) -> None:
    """Show the container's own cgroup: v2 binds its one directory; v1 mounts a tmpfs with one
    bind per hierarchy (``memory``, ``cpu``, ...), like runc. Read-only when ``ro``."""
    _create_target(dest, False)
    ro = opts.flags & sc.MS_RDONLY
    base = opts.flags & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    if list(cgroup_dirs) == [""]:
        _mount(cgroup_dirs[""], dest, None, sc.MS_BIND | sc.MS_REC, None, what)
        _mount(None, dest, None, sc.MS_REMOUNT | sc.MS_BIND | base | ro, None, what + " remount")
        return
    _mount("tmpfs", dest, "tmpfs", base, "mode=755", what + " tmpfs")
    for name, host_dir in sorted(cgroup_dirs.items()):
        sub = os.path.join(dest, name)
        os.makedirs(sub, exist_ok=True)
        _mount(host_dir, sub, None, sc.MS_BIND, None, f"{what} {name}")
        _mount(None, sub, None, sc.MS_REMOUNT | sc.MS_BIND | base | ro, None, f"{what} {name} remount")
    if ro:
        _mount(None, dest, "tmpfs", sc.MS_REMOUNT | base | sc.MS_RDONLY, "mode=755", what + " tmpfs ro")


def mount_all(rootfs: str, mounts: Sequence[Mount], cgroup_dirs: Mapping[str, str]) -> None:
    for i, m in enumerate(mounts):
        mount_one(rootfs, m, i, cgroup_dirs)


def is_mountpoint(path: Path) -> bool:
    return os.path.ismount(path)
