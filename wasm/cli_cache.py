"""Precompiled components for ``wasmtime serve``: compiled once per machine with the CLI's own
``wasmtime compile``, kept next to runwasm's compile cache, loaded only if runwasm wrote them.

Stdlib only. Layout, in the compile cache directory (``runwasm.wasm.cache``)::

    <dir>/hmac.key                              the compile cache's key (made by CompileCache)
    <dir>/wasmtime-cli/<key>.cwasm              ``wasmtime compile`` output
    <dir>/wasmtime-cli/<key>.cwasm.mac          HMAC-SHA256(hmac.key, key || sha256(artifact))
    <dir>/wasmtime-cli/<key>.lock               flock'ed around compile-or-load

Key: sha256 over the CLI binary's identity (path, size, mtime), the ``-W`` flags (the same for
``compile`` and ``serve``: wasmtime refuses an artifact compiled with other settings) and the
component's sha256. ``load`` returns a memfd holding an artifact whose HMAC matched (read once,
then copied: what the CLI maps is what was checked), compiling and storing it under the lock on
a miss, so concurrent first starts compile once. Anything unusable (no key file, a directory
not owned by us or writable by others, a failed compile, a lock not had in time) returns None:
``wasmtime serve`` then compiles the component itself. Never fails the task.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

KEY_FILE = "hmac.key"
SUBDIR = "wasmtime-cli"
LOCK_TIMEOUT = 300.0
COMPILE_TIMEOUT = 600.0


def _usable(path: Path) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def cache_key(cli: Path, wflags: Sequence[str], data: bytes) -> str:
    st = cli.stat()
    h = hashlib.sha256(f"{cli}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    h.update("\0".join(wflags).encode() + b"\0")
    h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[bool]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)


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


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(cli: Path, wflags: Sequence[str], data: bytes, module_fd: int, cache_dir: Path) -> int | None:
    """A memfd with the verified precompiled component, or None (see module doc). ``module_fd``
    holds ``data`` (the CLI compiles from it)."""
    mac_key_path = cache_dir / KEY_FILE
    if not _usable(cache_dir) or not _usable(mac_key_path):
        return None
    try:
        mac_key = mac_key_path.read_bytes()
        key = cache_key(cli, wflags, data)
        sub = cache_dir / SUBDIR
        sub.mkdir(mode=0o700, exist_ok=True)
        if not _usable(sub):
            return None
        entry = sub / f"{key}.cwasm"
        got = _verified(entry, mac_key, key)
        if got is not None:
            return _memfd(got)
        with _locked(sub / f"{key}.lock") as locked:
            if not locked:
                log.warning("wasmtime-cli cache lock %s not had within %.0fs: serving without it", entry, LOCK_TIMEOUT)
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
                _write_atomic(entry, got)
                _write_atomic(sub / f"{entry.name}.mac",
                              hmac.new(mac_key, key.encode() + hashlib.sha256(got).digest(), hashlib.sha256).digest())
            return _memfd(got)
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("wasmtime-cli cache in %s unusable (%s): serving without it", cache_dir, err)
        return None
