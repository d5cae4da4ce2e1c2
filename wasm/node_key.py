"""The node's compile-cache secret, its private directory and the cross-process lock.

Stdlib only (no wasmtime): shared by the on-disk cache (``runwasm.wasm.cache``) and the shim
server's content-store cache (``runwasm.shim.server.image_cache``), so one key, under one
directory, authenticates every compiled artifact runwasm writes on this node.

- ``cache_dir_from(directory)``: the cache root (argument, ``$RUNWASM_WASM_CACHE``, default).
- ``usable_dir(root, *subdirs)``: creates them (0700) and refuses (False, logged) any that is
  not owned by the current user or is group/other-writable.
- ``node_key(root)``: ``<root>/hmac.key``, 32 random bytes made once (atomically, never
  replacing one another process made first), refused unless a 0600-or-stricter file of ours.
- ``exclusive(path, timeout)``: an exclusive ``flock`` on ``path``; yields False (logged) when it
  cannot be opened or is still held after ``timeout`` seconds (a holder stopped, e.g. paused).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "/var/lib/runwasm/wasm-cache"
CACHE_ENV = "RUNWASM_WASM_CACHE"
KEY_FILE = "hmac.key"
KEY_BYTES = 32
LOCK_TIMEOUT = 600.0


def cache_dir_from(directory: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: argument, else ``$RUNWASM_WASM_CACHE``, else the default."""
    if directory is not None:
        return Path(directory)
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def usable_dir(root: Path, *subdirs: Path) -> bool:
    """Create ``subdirs`` (and ``root``) mode 0700; False (logged) if any is absent or unsafe."""
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in subdirs:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in (root, *subdirs):
            st = os.stat(d)
            if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                log.warning("wasm cache %r is not owned by uid %d or is group/other-writable; not using it",
                            str(d), os.geteuid())
                return False
    except OSError as err:
        log.warning("wasm cache %r is unusable, compiling without it: %s", str(root), err)
        return False
    return True


def node_key(root: Path) -> bytes | None:
    """The secret under ``root`` (made once, atomically); None (logged) when unusable."""
    path = root / KEY_FILE
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            _make_key(path)
            continue
        except OSError as err:
            log.warning("wasm cache key %r is unusable, compiling without the cache: %s", str(path), err)
            return None
        try:
            st = os.fstat(fd)
            key = os.read(fd, KEY_BYTES + 1)
        finally:
            os.close(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077 or len(key) != KEY_BYTES:
            log.warning("wasm cache key %r is not a %d-byte file private to uid %d; not using the cache",
                        str(path), KEY_BYTES, os.geteuid())
            return None
        return key
    return None


def _make_key(path: Path) -> None:
    import tempfile  # here: ~2 ms at import (shutil, random), for a key made once per node

    fd, tmp = tempfile.mkstemp(prefix=".key-", dir=path.parent)
    try:
        os.write(fd, os.urandom(KEY_BYTES))
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, path)  # never replaces a key another process made first
        except FileExistsError:
            pass
    except OSError as err:
        log.warning("failed to create wasm cache key %r: %s", str(path), err)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@contextlib.contextmanager
def exclusive(lock_path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[bool]:
    """Hold an exclusive flock on ``lock_path``; yields False (logged) if it cannot be had."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as err:
        log.warning("wasm cache lock %r cannot be opened, compiling without the cache: %s", str(lock_path), err)
        yield False
        return
    try:
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning("wasm cache lock %r still held after %.0f s, compiling without the cache",
                                str(lock_path), timeout)
                    yield False
                    return
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        yield True
    finally:
        os.close(fd)  # releases the lock


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to a temporary file beside ``path`` (``mode``), fsync, rename over ``path``."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
