"""On-disk compile cache for core modules and components, shared by every task on the node.

Key: sha256 over ``engine_identity()`` (wasmtime version + native library identity, engine
config fingerprint, CPU) + the input kind + sha256 of the input bytes. WAT input is keyed on
its text, so a hit skips ``wat2wasm`` too. Layout::

    <dir>/hmac.key                                        32 random bytes, 0600 (made once)
    <dir>/wasmtime-<version>/<module|component>-<key>.cwasm      the serialized artifact
    <dir>/wasmtime-<version>/<module|component>-<key>.cwasm.mac  HMAC-SHA256(hmac.key, key || sha256(artifact))
    <dir>/wasmtime-<version>/<module|component>-<key>.lock       flock'ed around compile-or-load

Directory: the ``directory`` argument, else ``$RUNWASM_WASM_CACHE``, else
``/var/lib/runwasm/wasm-cache``. It is created mode 0700. ``Module.deserialize_file`` trusts
its input (a crafted artifact is native code), so a directory that is not owned by the
current user or is writable by group/others is refused: the cache is bypassed with a warning.

Only artifacts runwasm wrote are deserialized: an entry is loaded only if its ``.mac`` side file
matches the HMAC of the artifact's bytes under this cache's own key (read through the same open
file that ``deserialize_file`` then maps, via ``/proc/self/fd``). A corrupt, truncated, foreign
(copied from another cache, or written by another tool) or half-written entry fails that check,
is logged and recompiled, never loaded.

Concurrency: compiled at most once per (input, engine identity) per cache directory. A miss
takes an exclusive ``flock`` on the entry's ``.lock`` file, checks again (another process may
have just stored it) and only then compiles and stores; concurrent first runs wait for the
lock and then load the stored entry. Writers compile into a unique temporary file in the same
directory, fsync it and ``rename`` it over the final name, then the ``.mac`` the same way. A
lock not obtained within ``LOCK_TIMEOUT`` seconds (a holder stopped, e.g. a paused container)
degrades to compiling without the cache. Any cache I/O failure degrades to compiling in
memory; it never fails the task.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import wasmtime
import wasmtime.component

from runwasm.wasm.detect import Kind, classify_bytes, wat_flavour
from runwasm.wasm.engine import ENGINE_FINGERPRINT, engine_identity, wasmtime_version
from runwasm.wasm.errors import InvalidModuleError
from runwasm.wasm.node_key import (
    CACHE_ENV,
    DEFAULT_CACHE_DIR,
    KEY_BYTES,
    KEY_FILE,
    LOCK_TIMEOUT,
    cache_dir_from,
    exclusive,
    node_key,
    usable_dir,
    write_atomic,
)

log = logging.getLogger(__name__)

__all__ = ["CACHE_ENV", "DEFAULT_CACHE_DIR", "KEY_BYTES", "KEY_FILE", "CompileCache", "Loaded", "cache_dir_from"]

Artifact = wasmtime.Module | wasmtime.component.Component


@dataclass(frozen=True, slots=True)
class Loaded:
    """A compiled module or component and how it was obtained.

    flavour: ``"module"`` or ``"component"`` (a WAT input is reported as what it compiled to).
    source: ``"hit"`` (deserialized from the cache), ``"compiled"`` (compiled and stored),
        ``"uncached"`` (compiled, cache unusable or write failed), ``"precompiled"`` (deserialized
        from the artifact the shim server took from containerd's content store, ``load_precompiled``).
    path: the cache file, when there is one.
    """

    artifact: Artifact
    flavour: Literal["module", "component"]
    source: Literal["hit", "compiled", "uncached", "precompiled"]
    path: Path | None


class CompileCache:
    """Compile-or-load for one Engine. Not thread-safe; one per process is the intended use."""

    def __init__(
        self,
        engine: wasmtime.Engine,
        directory: str | os.PathLike[str] | None = None,
        fingerprint: str = ENGINE_FINGERPRINT,
    ) -> None:
        self.engine = engine
        self.root = cache_dir_from(directory)
        self.identity = engine_identity(fingerprint)
        self.dir = self.root / f"wasmtime-{wasmtime_version().split('+', 1)[0]}"

    def key(self, data: bytes, kind: Kind) -> str:
        """Hex cache key of ``data`` classified as ``kind``."""
        h = hashlib.sha256()
        h.update(self.identity.encode() + b"\0" + kind.encode() + b"\0")
        h.update(hashlib.sha256(data).digest())
        return h.hexdigest()

    def path_for(self, data: bytes, kind: Kind) -> tuple[Path, Literal["module", "component"]]:
        """Cache file for ``data`` and the flavour it compiles to; raises ``InvalidModuleError``."""
        flavour: Literal["module", "component"]
        if kind == "wat":
            wf = wat_flavour(data[:65536])
            if wf is None:
                raise InvalidModuleError("failed to load module: text is not WAT (no leading '(module' or '(component')")
            flavour = wf
        elif kind in ("module", "component"):
            flavour = kind
        else:
            raise InvalidModuleError(f"failed to load module: unknown kind {kind!r}")
        return self.dir / f"{flavour}-{self.key(data, kind)}.cwasm", flavour

    def load(self, data: bytes, kind: Kind | None = None) -> Loaded:
        """Return the compiled form of ``data`` (binary or WAT), from the cache when possible.

        ``kind`` defaults to ``classify_bytes(data)``. Raises ``InvalidModuleError`` (with
        wasmtime's message) when the input does not parse, validate or compile.
        """
        if kind is None:
            kind = classify_bytes(data[:65536])
            if kind is None:
                raise InvalidModuleError(
                    f"failed to load module: expected a wasm binary (\\0asm) or WAT text, got {data[:8]!r}"
                )
        path, flavour = self.path_for(data, kind)
        key = node_key(self.root) if self._usable_dir() else None
        if key is None:
            return Loaded(self._compile(data, kind, flavour), flavour, "uncached", None)
        artifact = self._verified_load(path, flavour, key, definitive=False)
        if artifact is not None:
            return Loaded(artifact, flavour, "hit", path)
        with exclusive(path.with_suffix(".lock"), LOCK_TIMEOUT) as locked:
            if locked:  # the definitive check: a writer may have finished while we waited
                artifact = self._verified_load(path, flavour, key, definitive=True)
                if artifact is not None:
                    return Loaded(artifact, flavour, "hit", path)
            artifact = self._compile(data, kind, flavour)
            if locked and self._store(path, artifact, key):
                return Loaded(artifact, flavour, "compiled", path)
        return Loaded(artifact, flavour, "uncached", None)

    def load_precompiled(self, path: str, data: bytes, kind: Kind) -> Loaded | None:
        """The artifact at ``path`` (written and verified by the shim server, see
        ``runwasm.shim.server.image_cache``) deserialized with this engine, or None (logged) when it
        does not deserialize: then ``load(data, kind)`` compiles as usual."""
        try:
            _path, flavour = self.path_for(data, kind)
            return Loaded(self._deserialize(Path(path), flavour), flavour, "precompiled", Path(path))
        except (wasmtime.WasmtimeError, InvalidModuleError) as err:
            log.warning("precompiled artifact %r is unusable, compiling the module instead: %s", path, err)
            return None

    def _mac(self, key: bytes, path: Path, digest: bytes) -> bytes:
        return hmac.new(key, path.stem.encode() + b"\0" + digest, hashlib.sha256).digest()

    def _verified_load(self, path: Path, flavour: str, key: bytes, *, definitive: bool) -> Artifact | None:
        """The entry at ``path`` if its MAC verifies and it deserializes, else None (logged when
        ``definitive``: under the lock, where a failure is not a writer caught mid-way)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("wasm cache entry %r cannot be opened: %s", str(path), err)
            return None
        try:
            with open(fd, "rb", closefd=False) as f:
                digest = hashlib.file_digest(f, "sha256").digest()
            try:
                want = bytes.fromhex(Path(f"{path}.mac").read_text().strip())
            except (OSError, ValueError):
                want = b""
            if not hmac.compare_digest(want, self._mac(key, path, digest)):
                if definitive:
                    log.warning("wasm cache entry %r is unusable, recompiling: its MAC is missing or does not match "
                                "(corrupt, or not written by this runwasm cache); it is not loaded", str(path))
                return None
            try:
                return self._deserialize(Path(f"/proc/self/fd/{fd}"), flavour)
            except wasmtime.WasmtimeError as err:
                if definitive:
                    log.warning("wasm cache entry %r is unusable, recompiling: %s", str(path), err)
                return None
        finally:
            os.close(fd)

    def _deserialize(self, path: Path, flavour: str) -> Artifact:
        if flavour == "component":
            return wasmtime.component.Component.deserialize_file(self.engine, str(path))
        return wasmtime.Module.deserialize_file(self.engine, str(path))

    def _compile(self, data: bytes, kind: Kind, flavour: str) -> Artifact:
        try:
            wasm = bytes(wasmtime.wat2wasm(data.decode("utf-8"))) if kind == "wat" else data
            if flavour == "component":
                return wasmtime.component.Component(self.engine, wasm)
            return wasmtime.Module(self.engine, wasm)
        except UnicodeDecodeError as err:
            raise InvalidModuleError(f"failed to compile WAT: not UTF-8 text: {err}") from err
        except wasmtime.WasmtimeError as err:
            what = "WAT" if kind == "wat" else f"wasm {flavour}"
            raise InvalidModuleError(f"failed to compile {what}: {err}") from err

    def _usable_dir(self) -> bool:
        """Create the cache dir (0700) if needed; False (logged) if it is absent or unsafe."""
        return usable_dir(self.root, self.dir)

    def _store(self, path: Path, artifact: Artifact, key: bytes) -> bool:
        """Atomically write the serialized artifact to ``path``, then its MAC; False (logged) on failure."""
        try:
            blob = bytes(artifact.serialize())
            write_atomic(path, blob)
            write_atomic(Path(f"{path}.mac"), self._mac(key, path, hashlib.sha256(blob).digest()).hex().encode())
            return True
        except (OSError, wasmtime.WasmtimeError) as err:
            log.warning("failed to store wasm cache entry %r: %s", str(path), err)
            return False
