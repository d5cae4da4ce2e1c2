"""What compiled Wasm code depends on besides the module bytes, computed without importing wasmtime.

Stdlib only: the shim server keys compiled artifacts in containerd's content store
(``runwasm.shim.server.image_cache``) without loading wasmtime; ``runwasm.wasm.engine`` re-exports
these names. ``engine_identity`` = wasmtime version and native library identity, the engine
configuration fingerprint (``ENGINE_FINGERPRINT``, extended by the sandbox settings that change
code) and the CPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import lru_cache

from runwasm.wasm.sandbox import Sandbox

ENGINE_FINGERPRINT = "runwasm-engine-v1:wasmtime-defaults"
"""Bump it when ``runwasm.wasm.engine.make_engine``'s Config changes."""


def engine_fingerprint(sandbox: Sandbox | None = None) -> str:
    """``ENGINE_FINGERPRINT``, extended with what of ``sandbox`` changes compiled code."""
    if sandbox is None or (not sandbox.features and sandbox.fuel is None):
        return ENGINE_FINGERPRINT
    return f"{ENGINE_FINGERPRINT};{sandbox.engine_fingerprint}"


@lru_cache(maxsize=1)
def wasmtime_version() -> str:
    """Version of the installed wasmtime package plus the identity of its native library.

    ``importlib.metadata`` costs ~16 ms, so the version is read from the ``*.dist-info``
    directory name next to the package; the native library's size and mtime are appended so
    that a rebuilt library with the same version string still gets new cache keys.
    """
    spec = importlib.util.find_spec("wasmtime")  # locates the package without importing it
    if spec is None or spec.origin is None:
        return "unknown+nolib"
    pkg = os.path.dirname(os.path.abspath(spec.origin))
    version = "unknown"
    try:
        for entry in os.scandir(os.path.dirname(pkg)):
            if entry.name.startswith("wasmtime-") and entry.name.endswith(".dist-info"):
                version = entry.name[len("wasmtime-") : -len(".dist-info")]
                break
    except OSError:
        pass
    lib = "nolib"
    for root, _dirs, files in os.walk(pkg):
        for name in files:
            if name.startswith("_libwasmtime"):
                st = os.stat(os.path.join(root, name))
                lib = f"{st.st_size}-{st.st_mtime_ns}"
                break
    return f"{version}+{lib}"


@lru_cache(maxsize=1)
def cpu_fingerprint() -> str:
    """Short hash of the CPU model and feature flags: artifacts are compiled for the host CPU."""
    h = hashlib.sha256(os.uname().machine.encode())
    try:
        with open("/proc/cpuinfo", "rb") as f:
            for line in f:
                if line.startswith((b"flags", b"Features", b"model name", b"isa")):
                    h.update(line)
                if line.strip() == b"":
                    break  # the first processor's block is enough
    except OSError:
        pass
    return h.hexdigest()[:16]


def engine_identity(fingerprint: str = ENGINE_FINGERPRINT) -> str:
    """What compiled artifacts depend on besides the module bytes (part of every cache key)."""
    return f"wasmtime={wasmtime_version()};config={fingerprint};cpu={cpu_fingerprint()}"
