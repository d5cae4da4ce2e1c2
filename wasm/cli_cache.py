"""Precompiled components for ``wasmtime serve``: compiled once per machine with the CLI's own
``wasmtime compile``, kept next to runwasm's compile cache, loaded only if runwasm wrote them.

Stdlib and ``node_key`` only (its directory checks, key and lock). Layout, in the compile cache directory (``runwasm.wasm.cache``)::

    <dir>/hmac.key                              the node's key (``runwasm.wasm.node_key``)
    <dir>/wasmtime-cli/<key>.cwasm              ``wasmtime compile`` output
    <dir>/wasmtime-cli/<key>.cwasm.mac          HMAC-SHA256(hmac.key, key || sha256(artifact))
    <dir>/wasmtime-cli/<key>.lock               flock'ed around compile-or-load

Key: sha256 over the CLI binary's identity (path, size, mtime), the ``-W`` flags (the same for
``compile`` and ``serve``: wasmtime refuses an artifact compiled with other settings) and the
component's sha256. ``load`` returns a memfd holding an artifact whose HMAC matched (read once,
then copied: what the CLI maps is what was checked), compiling and storing it under the lock on
a miss, so concurrent first starts compile once. Anything unusable (no usable key, a directory
not owned by us or writable by others, a failed compile, a lock not had in time) returns None:
``wasmtime serve`` then compiles the component itself. Never fails the task.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from runwasm.wasm.node_key import KEY_FILE, exclusive, node_key, usable_dir, write_atomic

log = logging.getLogger(__name__)

SUBDIR = "wasmtime-cli"
LOCK_TIMEOUT = 300.0
COMPILE_TIMEOUT = 600.0


def cache_key(cli: Path, wflags: Sequence[str], data: bytes) -> str:
    st = cli.stat()
    h = hashlib.sha256(f"{cli}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    h.update("\0".join(wflags).encode() + b"\0")
    h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("runwasm-wasi-http-cwasm", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return fd


def _verified(path: Path, mac_key: bytes, key: str) -> bytes | None:
    try:
        data = path.read_bytes()
        mac = (path.parent / f"{path.name}.mac").read_bytes()
    except OSError:
        return None
    want = hmac.new(mac_key, key.encode() + hashlib.sha256(data).digest(), hashlib.sha256).digest()
    if hmac.compare_digest(mac, want):
        return data
    log.warning("wasmtime-cli cache entry %s does not match its MAC (corrupt or not written by runwasm): recompiling",
                path)
    return None


def load(cli: Path, wflags: Sequence[str], data: bytes, module_fd: int, cache_dir: Path) -> int | None:
    """A memfd with the verified precompiled component, or None (see module doc). ``module_fd``
    holds ``data`` (the CLI compiles from it)."""
    sub = cache_dir / SUBDIR
    if not (cache_dir / KEY_FILE).is_file():  # the compile cache makes the key; serving never does
        return None
    if not usable_dir(cache_dir, sub):
        return None
    mac_key = node_key(cache_dir)
    if mac_key is None:
        return None
    try:
        key = cache_key(cli, wflags, data)
        entry = sub / f"{key}.cwasm"
        got = _verified(entry, mac_key, key)
        if got is not None:
            return _memfd(got)
        with exclusive(sub / f"{key}.lock", LOCK_TIMEOUT) as locked:
            if not locked:
                return None
            got = _verified(entry, mac_key, key)  # another start may have stored it meanwhile
            if got is None:
                tmp = sub / f".{key}.{os.getpid()}.compile"
                res = subprocess.run([str(cli), "compile", *wflags, "-C", "cache=n", "-o", str(tmp),
                                      f"/proc/self/fd/{module_fd}"], pass_fds=[module_fd], capture_output=True,
                                     timeout=COMPILE_TIMEOUT, check=False, stdin=subprocess.DEVNULL)
                if res.returncode != 0:
                    log.warning("wasmtime compile failed (%d): %s", res.returncode, res.stderr.decode(errors="replace")[-500:])
                    tmp.unlink(missing_ok=True)
                    return None
                got = tmp.read_bytes()
                tmp.unlink()
                write_atomic(entry, got)
                write_atomic(sub / f"{entry.name}.mac",
                              hmac.new(mac_key, key.encode() + hashlib.sha256(got).digest(), hashlib.sha256).digest())
            return _memfd(got)
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("wasmtime-cli cache in %s unusable (%s): serving without it", cache_dir, err)
        return None
