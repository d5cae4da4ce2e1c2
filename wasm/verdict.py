"""Cached link-check verdicts: "this core module, with this configuration, takes ``wasmtime-min``".

Stdlib and ``node_key`` only, so a workload whose verdict is cached never imports wasmtime-py
before its exec (``runwasm.wasm.fast_min``). ``runwasm.wasm.task.prepare`` records a verdict
once it has loaded and link-checked a core module with wasmtime-py and built its
``wasmtime-min`` plan (so set-up errors are Create errors: a task without a verdict gets the full
check, and a failing check records nothing).

Layout, in the compile cache directory, next to the CLI artifacts (``runwasm.wasm.cli_cache``)::

    <dir>/verdicts/<key>      HMAC-SHA256(hmac.key, VERDICT_TAG || key), written atomically

Key: sha256 over ``KEY_VERSION``, the wasmtime-py version and native library identity plus the
engine fingerprint and CPU (``identity.engine_identity``), the identity (path, size, mtime) of
the full CLI and of ``wasmtime-min``, the sandbox settings (``Sandbox.to_json``, canonical JSON:
unknown imports, features, executor...), the entry point's export, and the module's sha256.
Whatever else decides the route (seccomp, tracing, the artifact itself) is checked again on
every use. A verdict whose MAC does not match (tampered, or of another node key) is ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from pathlib import Path

from runwasm.wasm.identity import engine_fingerprint, engine_identity
from runwasm.wasm.node_key import KEY_FILE, node_key, usable_dir, write_atomic
from runwasm.wasm.sandbox import Sandbox

log = logging.getLogger(__name__)

SUBDIR = "verdicts"
KEY_VERSION = "runwasm-verdict-v1"
"""Bump it when what ``task.prepare`` checks before recording a verdict changes."""
VERDICT_TAG = b"wasmtime-min-ok\0"


def verdict_key(data: bytes, sandbox: Sandbox, export: str | None, clis: tuple[Path, ...]) -> str:
    """The verdict key of ``data`` run with ``sandbox`` through ``export`` by ``clis`` (see module doc).
    Raises OSError when a CLI cannot be stat'ed."""
    h = hashlib.sha256()
    h.update(f"{KEY_VERSION}\0{engine_identity(engine_fingerprint(sandbox))}\0".encode())
    for exe in clis:
        st = exe.stat()
        h.update(f"{exe}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    h.update(json.dumps(sandbox.to_json(), sort_keys=True, separators=(",", ":")).encode() + b"\0")
    h.update(f"{export if export is not None else ''}\0{int(export is not None)}\0".encode())
    h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def _mac(mac_key: bytes, key: str) -> bytes:
    return hmac.new(mac_key, VERDICT_TAG + key.encode(), hashlib.sha256).digest()


def _dir(cache_dir: Path) -> tuple[Path, bytes] | None:
    sub = cache_dir / SUBDIR
    if not (cache_dir / KEY_FILE).is_file() or not usable_dir(cache_dir, sub):
        return None
    mac_key = node_key(cache_dir)
    return None if mac_key is None else (sub, mac_key)


def known(cache_dir: Path, key: str) -> bool:
    """True if the verdict ``key`` was recorded under this node's key (see module doc)."""
    try:
        got = _dir(cache_dir)
        if got is None:
            return False
        sub, mac_key = got
        mac = (sub / key).read_bytes()
    except OSError:
        return False
    if hmac.compare_digest(mac, _mac(mac_key, key)):
        return True
    log.warning("link-check verdict %s does not match its MAC (corrupt or not written by runwasm): ignored",
                sub / key)
    return False


def remember(cache_dir: Path, key: str) -> None:
    """Record the verdict ``key``; an unusable directory or a write failure is logged, never raised."""
    try:
        got = _dir(cache_dir)
        if got is None:
            return
        sub, mac_key = got
        write_atomic(sub / key, _mac(mac_key, key))
    except OSError as err:
        log.warning("cannot record link-check verdict in %s: %s", cache_dir, err)
