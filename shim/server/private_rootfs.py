"""Mount a planned EROFS rootfs (``shim/common/rootfs_plan.py``) in a mount namespace of its own.

Nothing of the image is mounted in the host's mount namespace. ``mount_private`` starts a fresh
thread that ``unshare(CLONE_NEWNS)``s (a thread may: it gets its own ``fs_struct``), makes ``/``
rslave (host mounts and unmounts still propagate in, nothing propagates out), and performs the
plan there: EROFS layers file-backed through the new mount API (``runwasm.oci.mounts.syscalls``;
a read-only autoclear loop device where the kernel answers ENOTBLK), dm-verity where the layer
has a sidecar, then the overlay on ``<bundle>/rootfs``. Before it exits the thread opens
``/proc/thread-self/ns/mnt`` and an ``O_PATH`` fd of the rootfs; those two fds are the only
references to the namespace (``PrivateRootfs``):

- every workload of the container is spawned into it: the zygote ``setns``es a workload that
  gets the ``rootns`` fd (``shim/spawn/zygote.py``) before its entry runs, so a Linux init
  unshares its own mount namespace *from this one* and pivots into ``<bundle>/rootfs`` as usual,
  and a Wasm workload opens its rootfs and preopens at the same paths;
- the server reads the rootfs (routing, the image's module lookup) through
  ``/proc/self/fd/<root fd>/...`` (``view``).

Release: closing both fds (``close``, at Delete) drops the namespace once the container's
processes are gone; the kernel then unmounts everything and frees the autoclear loop devices. A
SIGKILLed server closes them implicitly; ``delete`` kills what is left of the container, and
closes recorded dm-verity devices (``close_verity``). A failure half-way leaves nothing either:
the thread's namespace dies with it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runwasm.shim.common import rootfs_plan as rp
from runwasm.shim.common.errors import FailedPreconditionError, InvalidArgumentError

log = logging.getLogger(__name__)

ROOTNS_FD = "rootns"
"""Name of the namespace fd among a workload's named fds (``shim/spawn/zygote.py``)."""


@dataclass(slots=True)
class PrivateRootfs:
    """An EROFS rootfs mounted in a mount namespace of its own (its fds)."""

    ns_fd: int
    root_fd: int
    methods: tuple[str, ...] = ()       # how each layer was mounted (fsmount, loop+fsmount, dm-verity...)
    verity: tuple[str, ...] = ()        # dm-verity device names opened for the layers

    @property
    def view(self) -> Path:
        """The rootfs as the server sees it (through the O_PATH fd)."""
        return Path(f"/proc/{os.getpid()}/fd/{self.root_fd}")

    def close(self) -> None:
        """Drop the server's references; the namespace goes with the container's last process."""
        for fd in (self.root_fd, self.ns_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.root_fd = self.ns_fd = -1
        if self.verity:
            close_verity(self.verity)


def dmverity_available() -> bool:
    import shutil  # here: ~3 ms at import (bz2, lzma), for EROFS layers with dm-verity only

    return os.path.exists("/dev/mapper/control") and shutil.which("veritysetup") is not None


def _read_sidecar(path: str, what: str) -> tuple[str, int]:
    try:
        doc = json.loads(Path(path).read_text())
        root, offset = str(doc["roothash"]), int(doc["hashoffset"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InvalidArgumentError(f"{what}: cannot read the dm-verity sidecar {path!r} "
                                   f"(expected JSON with roothash and hashoffset): {err}") from err
    if not root or any(c not in "0123456789abcdef" for c in root.lower()) or offset <= 0:
        raise InvalidArgumentError(f"{what}: dm-verity sidecar {path!r}: bad roothash {root!r} or hashoffset {offset}")
    return root, offset


def _open_verity(layer: rp.ErofsLayer, name: str, what: str) -> str:
    """Open a dm-verity device over ``layer.source`` (data and tree in the same file, the
    superblock at ``hashoffset``, as containerd's EROFS differ writes it); returns its path."""
    assert layer.dmverity is not None
    root, offset = _read_sidecar(layer.dmverity, what)
    if not dmverity_available():
        raise FailedPreconditionError(
            f"{what}: the layer carries dm-verity data ({layer.dmverity}), but this host cannot activate "
            "dm-verity (no /dev/mapper/control or no veritysetup); refusing to mount it unverified")
    argv = ["veritysetup", "open", layer.source, name, layer.source, root, f"--hash-offset={offset}"]
    res = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if res.returncode != 0:
        raise FailedPreconditionError(f"{what}: veritysetup open failed ({res.returncode}): {res.stderr.strip()}")
    return f"/dev/mapper/{name}"


def close_verity(names: Sequence[str]) -> list[str]:
    """Close dm-verity devices (best effort); returns the names that could not be closed."""
    left = []
    for name in names:
        if not os.path.exists(f"/dev/mapper/{name}"):
            continue
        res = subprocess.run(["veritysetup", "close", name], capture_output=True, text=True, check=False, timeout=60)
        if res.returncode != 0:
            log.warning("failed to close dm-verity device %s: %s", name, res.stderr.strip())
            left.append(name)
    return left


def _mkdir(d: rp.MkDir) -> None:
    try:
        os.mkdir(d.path, d.mode)
    except FileExistsError:
        return
    os.chmod(d.path, d.mode)  # not umasked
    if d.uid is not None and d.gid is not None:
        os.chown(d.path, d.uid, d.gid)


def _perform(plan: rp.Plan, cid: str, verity: list[str]) -> list[str]:
    """Runs in the private namespace: every step of ``plan``; returns how each was mounted and
    appends the dm-verity devices it opens to ``verity``."""
    from runwasm.oci.mounts import syscalls as ms

    methods: list[str] = []
    for pm in plan.mounts:
        what = f"container {cid!r}: rootfs mount {pm.index}"
        for d in pm.mkdirs:
            _mkdir(d)
        os.makedirs(pm.target, 0o700, exist_ok=True)
        step = pm.step
        if isinstance(step, rp.ErofsLayer):
            if step.dmverity is not None:
                name = f"runwasm-{cid}-{pm.index}"
                verity.append(name)
                dev = _open_verity(step, name, what)
                ms.mount_fs("erofs", dev, pm.target, [("device", d) for d in step.devices], readonly=True)
                methods.append("dm-verity")
            else:
                res = ms.mount_erofs_file(Path(step.source), Path(pm.target), [Path(d) for d in step.devices])
                methods.append(res.method)
        elif isinstance(step, rp.OverlayMount):
            upper = Path(step.upper) if step.upper else None
            work = Path(step.work) if step.work else None
            ms.mount_overlay([Path(x) for x in step.lowers], Path(pm.target), upper, work, step.extra)
            methods.append("overlay")
        else:
            ms.bind_mount(Path(step.source), Path(pm.target), step.readonly)
            methods.append("bind")
    return methods


def mount_private(plan: rp.Plan, cid: str) -> PrivateRootfs:
    """Perform ``plan`` in a new mount namespace (see the module docstring). Blocks for the few
    milliseconds the mounts take; raises InvalidArgumentError/FailedPreconditionError (nothing
    left mounted) on failure."""
    from runwasm.linux import syscalls as sc

    result: list[object] = []
    verity: list[str] = []

    def work() -> None:
        try:
            sc.unshare(sc.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_SLAVE, None)
            methods = _perform(plan, cid, verity)
            root_fd = os.open(plan.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            ns_fd = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            result.append(PrivateRootfs(ns_fd, root_fd, tuple(methods), tuple(verity)))
        except BaseException as err:  # noqa: BLE001 - handed to the caller below
            result.append(err)

    t = threading.Thread(target=work, name=f"rootfs-{cid}", daemon=True)
    t.start()
    t.join()
    out = result[0] if result else RuntimeError("rootfs thread ended without a result")
    if isinstance(out, PrivateRootfs):
        return out
    assert isinstance(out, BaseException)
    if verity:
        t.join()  # the thread (and its namespace, holding the mounts on the devices) is gone
        close_verity(verity)
    if isinstance(out, InvalidArgumentError | FailedPreconditionError):
        raise out
    raise InvalidArgumentError(f"container {cid!r}: failed to mount its EROFS rootfs: {out}") from out
