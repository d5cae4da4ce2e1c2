"""/dev inside the container: the default devices, ``linux.devices``, and the standard links.

Runs after spec mounts (so /dev is already the spec's tmpfs) and before pivot_root (paths are
under the rootfs). In a user namespace mknod is not allowed, so devices are bind-mounted from
the host instead (what runc does).

Order (runc's): the spec's devices, then the defaults it does not list, then the links; and
``/dev/ptmx`` is always the link ``pts/ptmx`` on a fresh /dev, even when the spec lists a
``/dev/ptmx`` device (``ctr run --privileged`` lists every host device): the container's ptys come
from its own devpts instance. A device path's last component is never followed as a symlink, so
a node is never created through a link into another filesystem (``/dev/ptmx`` -> the devpts).
"""

from __future__ import annotations

import os
import stat

from runwasm.linux import syscalls as sc
from runwasm.linux.errors import InvalidArgumentError, SetupError
from runwasm.linux.mounts import secure_join
from runwasm.oci.runtime_spec import Device

DEFAULT_DEVICES = (
    Device("/dev/null", "c", 1, 3, 0o666, 0, 0), Device("/dev/zero", "c", 1, 5, 0o666, 0, 0),
    Device("/dev/full", "c", 1, 7, 0o666, 0, 0), Device("/dev/random", "c", 1, 8, 0o666, 0, 0),
    Device("/dev/urandom", "c", 1, 9, 0o666, 0, 0), Device("/dev/tty", "c", 5, 0, 0o666, 0, 0),
)
LINKS = (("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
         ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"), ("pts/ptmx", "/dev/ptmx"))
_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def _create(rootfs: str, dev: Device, index: int | None, bind: bool) -> None:
    what = f"linux.devices[{index}] {dev.path!r}" if index is not None else f"default device {dev.path!r}"
    if dev.type not in _TYPES:
        raise InvalidArgumentError(f"failed to create {what}: type must be c, u, b or p, got {dev.type!r}")
    parent, name = os.path.split(dev.path.rstrip("/"))
    if not name or name in (".", ".."):
        raise InvalidArgumentError(f"failed to create {what}: not a file path")
    path = os.path.join(secure_join(rootfs, parent or "/"), name)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        if bind:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
            sc.mount(dev.path, path, None, sc.MS_BIND, None)
            return
        mode = dev.file_mode if dev.file_mode is not None else 0o666
        os.mknod(path, _TYPES[dev.type] | mode, os.makedev(dev.major, dev.minor))
        os.chmod(path, mode)  # mknod applies the umask
        os.chown(path, dev.uid or 0, dev.gid or 0)
    except OSError as err:
        raise SetupError(f"failed to create {what} at {path!r}: [errno {err.errno}] "
                         f"{os.strerror(err.errno or 0)}") from err


def setup_dev(rootfs: str, devices: tuple[Device, ...], in_user_ns: bool, dev_is_mounted: bool) -> None:
    """Populate ``<rootfs>/dev``. The defaults and links are only made when /dev is a fresh
    mount from the spec (like runc: a rootfs that brings its own /dev keeps it)."""
    for i, dev in enumerate(devices):
        if dev_is_mounted and os.path.normpath(dev.path) == "/dev/ptmx":
            continue  # replaced by the pts/ptmx link below
        _create(rootfs, dev, i, in_user_ns)
    if not dev_is_mounted:
        return
    spec_paths = {os.path.normpath(d.path) for d in devices}
    for dev in DEFAULT_DEVICES:
        if dev.path not in spec_paths:
            _create(rootfs, dev, None, in_user_ns)
    for target, link in LINKS:
        parent, name = os.path.split(link)
        path = os.path.join(secure_join(rootfs, parent), name)
        try:
            if os.path.lexists(path):
                if link != "/dev/ptmx":
                    continue
                os.unlink(path)
            os.symlink(target, path)
        except OSError as err:
            raise SetupError(f"failed to create link {link!r} -> {target!r}: {err.strerror}") from err
