"""On-disk compile cache for core modules and components.

Key: sha256 over ``engine_identity()`` (wasmtime version + native library identity, engine
config fingerprint, CPU) + the input kind + sha256 of the input bytes. WAT input is keyed on
its text, so a hit skips ``wat2wasm`` too. Layout::

    <dir>/wasmtime-<version>/<module|component>-<key>.cwasm

Directory: the ``directory`` argument, else ``$RUNWASM_WASM_CACHE``, else
``/var/lib/runwasm/wasm-cache``. It is created mode 0700. ``Module.deserialize_file`` trusts
its input (a crafted artifact is native code), so a directory that is not owned by the
current user or is writable by group/others is refused: the cache is bypassed with a warning.

Concurrency: writers compile into a unique temporary file in the same directory, fsync it and
``rename`` it over the final name, so readers only ever see complete artifacts and two
processes compiling the same module at once both succeed (the last rename wins; the contents
are equivalent). A hit that fails to deserialize (corrupt, or incompatible in a way the key did
not capture) is logged, recompiled and atomically replaced. Any cache I/O failure degrades to
compiling in memory; it never fails the task.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import wasmtime
import wasmtime.component

from runwasm.wasm.detect import Kind, classify_bytes, wat_flavour
from runwasm.wasm.engine import ENGINE_FINGERPRINT, engine_identity, wasmtime_version
from runwasm.wasm.errors import InvalidModuleError

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "/var/lib/runwasm/wasm-cache"
CACHE_ENV = "RUNWASM_WASM_CACHE"

Artifact = wasmtime.Module | wasmtime.component.Component


@dataclass(frozen=True, slots=True)
class Loaded:
    """A compiled module or component and how it was obtained.

    flavour: ``"module"`` or ``"component"`` (a WAT input is reported as what it compiled to).
    source: ``"hit"`` (deserialized from the cache), ``"compiled"`` (compiled and stored),
        ``"uncached"`` (compiled, cache unusable or write failed).
    path: the cache file, when there is one.
    """

    artifact: Artifact
    flavour: Literal["module", "component"]
    source: Literal["hit", "compiled", "uncached"]
    path: Path | None


def cache_dir_from(directory: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: argument, else ``$RUNWASM_WASM_CACHE``, else the default."""
    if directory is not None:
        return Path(directory)
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


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
        usable = self._usable_dir()
        if usable and path.exists():
            try:
                artifact = self._deserialize(path, flavour)
                return Loaded(artifact, flavour, "hit", path)
            except wasmtime.WasmtimeError as err:
                log.warning("wasm cache entry %r is unusable, recompiling: %s", str(path), err)
        artifact = self._compile(data, kind, flavour)
        if usable and self._store(path, artifact):
            return Loaded(artifact, flavour, "compiled", path)
        return Loaded(artifact, flavour, "uncached", None)

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
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            for d in (self.root, self.dir):
                st = os.stat(d)
                if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    log.warning(
                        "wasm cache %r is not owned by uid %d or is group/other-writable; not using it",
                        str(d), os.geteuid(),
                    )
                    return False
        except OSError as err:
            log.warning("wasm cache %r is unusable, compiling without it: %s", str(self.dir), err)
            return False
        return True

    def _store(self, path: Path, artifact: Artifact) -> bool:
        """Atomically write the serialized artifact to ``path``; False (logged) on failure."""
        tmp = None
        try:
            blob = artifact.serialize()
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
            tmp = None
            return True
        except (OSError, wasmtime.WasmtimeError) as err:
            log.warning("failed to store wasm cache entry %r: %s", str(path), err)
            return False
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError as err:
                    log.warning("failed to remove temporary cache file %r: %s", tmp, err)
