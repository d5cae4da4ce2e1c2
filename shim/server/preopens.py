"""Spec mounts as Wasm preopens: which bind mounts a Wasm guest sees, and read-only or not.

A Wasm task makes no mounts: a bind mount of a host directory (``type`` bind/rbind, or the
``bind``/``rbind`` option) becomes a WASI preopen of its source at its destination. Its options
are parsed with the Linux executor's rule (``runwasm.linux.mounts.parse_options``: unknown words
are refused) and then each must mean something for a preopen:

- honoured: ``ro``/``rw`` and the recursive ``rro``/``rrw`` (a read-only preopen is read-only for
  the whole tree, so ``ro`` also covers submounts); ``bind``, ``rbind``, ``defaults``;
- already true of every WASI guest: ``nosuid``/``noexec`` (and ``rnosuid``/``rnoexec``, ``suid``,
  ``exec``...): a guest cannot execute files or gain privileges; propagation words
  (``rprivate``...): no mount is made, so nothing propagates;
- refused (InvalidArgumentError naming the mount and the option): everything else
  (``nodev``, atime words, ``nosymfollow``, ``sync``...), which a preopen cannot enforce.

Other mounts (``proc``, ``tmpfs``, ``sysfs``, ``cgroup``... and binds of single files such as
``/etc/hosts``) have no WASI meaning; they are listed in one log line per container and not
exposed to the guest.
"""

from __future__ import annotations

import logging
import os

from runwasm.linux import syscalls as sc
from runwasm.linux.errors import InvalidArgumentError as LinuxInvalidArgument
from runwasm.linux.mounts import PROPAGATION, parse_options
from runwasm.oci.runtime_spec import Mount
from runwasm.shim.common.errors import InvalidArgumentError

log = logging.getLogger(__name__)

_HONOURED = frozenset({"bind", "rbind", "defaults", "ro", "rw", "rro", "rrw",
                       "nosuid", "suid", "noexec", "exec", "rnosuid", "rsuid", "rnoexec", "rexec",
                       "dev", "rdev", *PROPAGATION})


def is_bind(m: Mount) -> bool:
    return m.type in ("bind", "rbind") or (m.type in ("", "none") and ("bind" in m.options or "rbind" in m.options))


def _read_only(m: Mount, where: str) -> bool:
    try:
        opts = parse_options(m.options, "bind", where)
    except LinuxInvalidArgument as err:
        raise InvalidArgumentError(str(err)) from err
    for opt in m.options:
        if opt not in _HONOURED:
            raise InvalidArgumentError(f"failed to apply {where}: mount option {opt!r} cannot be honoured "
                                       "by a Wasm preopen (runwasm honours ro/rw/rro/rrw on Wasm bind mounts)")
    if opts.attr_set & sc.MOUNT_ATTR_RDONLY:
        return True
    if opts.attr_clr & sc.MOUNT_ATTR_RDONLY:
        return False
    return bool(opts.flags & sc.MS_RDONLY)


def wasm_preopens(container_id: str, mounts: tuple[Mount, ...]) -> tuple[tuple[str, str, bool], ...]:
    """``(host dir, guest dir, read_only)`` for each directory bind mount, in spec order."""
    out: list[tuple[str, str, bool]] = []
    skipped: list[str] = []
    for i, m in enumerate(mounts):
        if not is_bind(m):
            skipped.append(f"{m.destination} ({m.type})")
            continue
        read_only = _read_only(m, f"mounts[{i}] (destination {m.destination!r})")
        if not os.path.isdir(m.source):
            skipped.append(f"{m.destination} (bind of a non-directory)")
            continue
        out.append((m.source, m.destination, read_only))
    if skipped:
        log.info("container %r: mounts with no WASI meaning, not exposed to the guest: %s",
                 container_id, ", ".join(skipped))
    return tuple(out)
