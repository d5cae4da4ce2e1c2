"""Kernel steps for a Wasm task that serves (``wasi:http/proxy``): its network namespace, and
read-only views of directories for a CLI that cannot make read-only preopens.

- ``enter_network(ns)``: the spec's ``linux.namespaces`` entry of type ``network``: with a
  ``path`` (a CRI pod's netns, ``ctr run --with-ns``) the workload joins it; without one it gets a
  new namespace whose loopback is up (as runc brings ``lo`` up); no entry: it stays in the
  server's (``ctr run --net-host``). Needs CAP_SYS_ADMIN, so before the credential drop.
- ``readonly_clone(fd)``: a detached, recursively read-only copy of the mount tree at the
  directory ``fd`` (``open_tree(OPEN_TREE_CLONE|AT_RECURSIVE)`` + ``mount_setattr``), never
  attached anywhere: whoever opens ``/proc/self/fd/<fd>`` gets the tree with every write refused
  by the kernel (EROFS). It lives as long as the fd. Needs CAP_SYS_ADMIN.

Both raise ``runwasm.linux.errors.SetupError`` naming what failed.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from runwasm.linux import syscalls as sc
from runwasm.linux.errors import SetupError

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    """Bring ``lo`` of the current network namespace up."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, req)[:18])[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def enter_network(ns: str | None) -> None:
    """``ns``: None (stay), ``""`` (a new namespace, loopback up) or a namespace path (join)."""
    if ns is None:
        return
    try:
        if ns == "":
            sc.unshare(sc.CLONE_NEWNET)
            loopback_up()
            return
        fd = os.open(ns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            sc.setns(fd, sc.CLONE_NEWNET)
        finally:
            os.close(fd)
    except OSError as err:
        what = "create a network namespace" if ns == "" else f"join network namespace {ns!r}"
        raise SetupError(f"failed to {what} for the Wasm task served or run by the wasmtime CLI: [errno {err.errno}] {err.strerror}") from err


def readonly_clone(fd: int, where: str) -> int:
    """See module doc; ``where`` names the directory in errors. Returns an O_CLOEXEC fd."""
    try:
        tree = sc.open_tree(fd, sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC | sc.AT_RECURSIVE | sc.AT_EMPTY_PATH)
    except OSError as err:
        raise SetupError(f"failed to make a read-only view of {where!r} (open_tree): "
                         f"[errno {err.errno}] {err.strerror}") from err
    try:
        sc.mount_setattr_fd(tree, sc.MOUNT_ATTR_RDONLY, 0, recursive=True)
    except OSError as err:
        os.close(tree)
        raise SetupError(f"failed to make a read-only view of {where!r} (mount_setattr): "
                         f"[errno {err.errno}] {err.strerror}") from err
    return tree
