"""Precompiled artifacts for the wasmtime CLI (``serve``, ``run``, ``wasmtime-min run``):
compiled once per machine with the CLI's own ``wasmtime compile``, kept next to runwasm's
compile cache, handed to the CLI only if runwasm wrote them.

Stdlib, ``node_key`` (its directory checks, key and lock) and ``runwasm.oci.steps`` only. Layout, in the compile cache directory (``runwasm.wasm.cache``)::

    <dir>/hmac.key                              the node's key (``runwasm.wasm.node_key``)
    <dir>/wasmtime-cli/<key>.cwasm              ``wasmtime compile`` output
    <dir>/wasmtime-cli/<key>.cwasm.mac          HMAC-SHA256(hmac.key, key || sha256(artifact))
    <dir>/wasmtime-cli/<key>.lock               flock'ed around compile-or-load

Key: sha256 over the identity (path, size, mtime) of the CLI that compiles and of the one that
runs the artifact (``wasmtime-min`` for plain tasks: it cannot compile, and refuses artifacts
made with settings other than its own), the compile flags (the ``-W`` flags of the task: the
runner must be given the same ones, wasmtime refuses an artifact compiled with other settings)
and the module's sha256.

``load`` returns an O_RDONLY fd of the cache entry whose HMAC matched, hashed through that same
fd, so the CLI maps the file itself and every task running the same artifact shares its pages
through the page cache (no per-task copy). Trust argument: what the CLI runs is native code, so
it must be what runwasm compiled. The entry is written atomically by runwasm (a fresh 0600 file
renamed into place, never rewritten in place) in a directory ``usable_dir`` accepts only if it is
0700 and owned by the server's uid; the fd pins the inode that was verified, so a later rename
over the name does not change what the CLI reads; changing the bytes of that inode in place takes
the server's own uid (or root), which can replace runwasm itself. The file is mode 0644
(``ARTIFACT_MODE``: the CLI, running as the container's user, reopens it through
``/proc/self/fd/N``, which checks the inode's mode); the directory's 0700 keeps other users
from reaching it by path, and another uid cannot open a task's ``/proc/<pid>/fd/N`` (ptrace
access check), so only processes of the task's own uid, which could read its memory anyway,
gain anything (the module's compiled code). On a miss the module is
compiled and stored under the lock, so concurrent first starts compile once.

Anything unusable (no usable key, a directory not owned by us or writable by others, a failed
compile, a lock not had in time) returns None: ``wasmtime serve``/``run`` then compile the
component themselves; a plain task runs in process (``runwasm.wasm.min_run``). Never fails the task.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from runwasm.oci import steps
from runwasm.wasm.node_key import KEY_FILE, exclusive, node_key, usable_dir, write_atomic

log = logging.getLogger(__name__)

SUBDIR = "wasmtime-cli"
LOCK_TIMEOUT = 300.0
COMPILE_TIMEOUT = 600.0
ARTIFACT_MODE = 0o644
"""The CLI reopens its fd as ``/proc/self/fd/N`` after dropping to the container's user, which
checks the inode's mode; the 0700 directory still keeps everyone else from reaching it by path."""


def cache_key(cli: Path, wflags: Sequence[str], data: bytes, runner: Path | None = None) -> str:
    h = hashlib.sha256()
    for exe in (cli, *((runner,) if runner is not None else ())):
        st = exe.stat()
        h.update(f"{exe}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    h.update("\0".join(wflags).encode() + b"\0")
    h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("runwasm-wasm-module", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return fd


def _mac(mac_key: bytes, key: str, digest: bytes) -> bytes:
    return hmac.new(mac_key, key.encode() + digest, hashlib.sha256).digest()


def _verified(path: Path, mac_key: bytes, key: str) -> int | None:
    """An O_RDONLY fd of ``path`` if the bytes read through it match the entry's MAC, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with open(fd, "rb", closefd=False) as f:
            digest = hashlib.file_digest(f, "sha256").digest()
        mac = (path.parent / f"{path.name}.mac").read_bytes()
    except OSError:
        os.close(fd)
        return None
    if hmac.compare_digest(mac, _mac(mac_key, key, digest)):
        os.lseek(fd, 0, os.SEEK_SET)
        if os.fstat(fd).st_mode & 0o777 != ARTIFACT_MODE:  # an entry of an older runwasm (0600)
            os.fchmod(fd, ARTIFACT_MODE)
        return fd
    os.close(fd)
    log.warning("wasmtime-cli cache entry %s does not match its MAC (corrupt or not written by runwasm): recompiling",
                path)
    return None


def load(cli: Path, wflags: Sequence[str], data: bytes, cache_dir: Path, runner: Path | None = None,
         compile: bool = True) -> int | None:
    """An O_RDONLY fd (O_CLOEXEC) of the verified artifact of ``data`` compiled by ``cli`` with
    ``wflags`` for ``runner`` (default: ``cli`` itself), or None (see module doc). Recorded as the
    step ``wasm.cli_artifact`` (``runwasm.oci.steps``): a hit when the artifact was there, a miss
    when it was compiled now; neither when the cache is unusable. ``compile=False``: look only,
    never run the CLI (the shim server, which runs no subprocess: ``runwasm.shim.spawn.native``)."""
    with steps.step("wasm.cli_artifact", **{"runwasm.wasm.cli": cli.name}) as attrs:
        fd, hit = _load(cli, wflags, data, cache_dir, runner, compile)
        if hit is not None:
            attrs[steps.CACHE_HIT_ATTR] = hit
        return fd


def _load(cli: Path, wflags: Sequence[str], data: bytes, cache_dir: Path,
          runner: Path | None, compile: bool = True) -> tuple[int | None, bool | None]:
    """``load``'s fd, and whether it was a cache hit (None: no artifact, the cache unusable)."""
    sub = cache_dir / SUBDIR
    if not (cache_dir / KEY_FILE).is_file():  # the compile cache makes the key; the CLI routes never do
        return None, None
    if not usable_dir(cache_dir, sub):
        return None, None
    mac_key = node_key(cache_dir)
    if mac_key is None:
        return None, None
    try:
        key = cache_key(cli, wflags, data, runner)
        entry = sub / f"{key}.cwasm"
        got = _verified(entry, mac_key, key)
        if got is not None:
            return got, True
        if not compile:
            return None, None
        with exclusive(sub / f"{key}.lock", LOCK_TIMEOUT) as locked:
            if not locked:
                return None, None
            got = _verified(entry, mac_key, key)  # another start may have stored it meanwhile
            if got is not None:
                return got, True
            if _compile(cli, wflags, data, sub, key, mac_key):
                got = _verified(entry, mac_key, key)
            return got, False if got is not None else None
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("wasmtime-cli cache in %s unusable (%s): running without it", cache_dir, err)
        return None, None


def _compile(cli: Path, wflags: Sequence[str], data: bytes, sub: Path, key: str, mac_key: bytes) -> bool:
    """``wasmtime compile`` ``data`` into the entry ``key`` and its MAC; False (logged) on failure."""
    tmp = sub / f".{key}.{os.getpid()}.compile"
    module_fd = _memfd(data)
    try:
        res = subprocess.run([str(cli), "compile", *wflags, "-C", "cache=n", "-o", str(tmp),
                              f"/proc/self/fd/{module_fd}"], pass_fds=[module_fd], capture_output=True,
                             timeout=COMPILE_TIMEOUT, check=False, stdin=subprocess.DEVNULL)
    finally:
        os.close(module_fd)
    if res.returncode != 0:
        log.warning("wasmtime compile failed (%d): %s", res.returncode, res.stderr.decode(errors="replace")[-500:])
        tmp.unlink(missing_ok=True)
        return False
    got = tmp.read_bytes()
    tmp.unlink()
    entry = sub / f"{key}.cwasm"
    write_atomic(entry, got, ARTIFACT_MODE)
    write_atomic(sub / f"{entry.name}.mac", _mac(mac_key, key, hashlib.sha256(got).digest()))
    return True
