"""The wasmtime Engine used for Wasm tasks, and the identity of its compiled code.

Config: wasmtime's defaults, deliberately. Why nothing is switched on:
- Epoch interruption and fuel are off. Each task runs in its own process, so Kill is a real
  signal (SIGKILL/SIGTERM with default dispositions) that stops a spinning guest and one
  blocked in a host call (``poll_oneoff``, a read on a FIFO) alike; epochs cannot interrupt the
  latter at all, and cost up to 2.6x on tight loops (stack.md §2.4).
- wasmtime's own disk cache (``Config.cache``) is off: ``runwasm.wasm.cache`` keys artifacts
  itself so that components, WAT and the shim's future precompile path share one scheme.
- Memory reservation, guard sizes, parallel compilation: defaults. One instance per process
  means the 4 GiB virtual reservation per linear memory costs nothing real.
A stable, minimal config also keeps compiled artifacts valid across runwasm releases: the cache
key (``engine_identity``) only changes when wasmtime, this fingerprint or the CPU changes.
If you change the Config, bump ``ENGINE_FINGERPRINT``.

The runtime options' sandbox (``runwasm.wasm.sandbox``) may switch wasmtime proposals on or off
and turn fuel metering on; ``engine_fingerprint(sandbox)`` then differs, so those artifacts get
cache keys of their own (the default sandbox keeps the default fingerprint).
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache

import wasmtime

from runwasm.wasm.sandbox import FEATURES, Sandbox

ENGINE_FINGERPRINT = "runwasm-engine-v1:wasmtime-defaults"


def make_engine(sandbox: Sandbox | None = None) -> wasmtime.Engine:
    """A new Engine with the task configuration described above, plus ``sandbox``'s features
    and fuel metering (the sandbox must have passed ``Sandbox.checked``: wasmtime aborts the
    process on some impossible feature sets instead of raising)."""
    cfg = wasmtime.Config()
    if sandbox is not None:
        for name, on in sandbox.features:
            setattr(cfg, FEATURES[name], on)
        if sandbox.fuel is not None:
            cfg.consume_fuel = True
    return wasmtime.Engine(cfg)


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
    pkg = os.path.dirname(os.path.abspath(wasmtime.__file__))
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
