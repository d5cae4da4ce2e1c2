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
If you change the Config, bump ``ENGINE_FINGERPRINT`` (``runwasm.wasm.identity``).

The runtime options' sandbox (``runwasm.wasm.sandbox``) may switch wasmtime proposals on or off
and turn fuel metering on; ``engine_fingerprint(sandbox)`` then differs, so those artifacts get
cache keys of their own (the default sandbox keeps the default fingerprint).
"""

from __future__ import annotations

import wasmtime

from runwasm.wasm.identity import (
    ENGINE_FINGERPRINT,
    cpu_fingerprint,
    engine_fingerprint,
    engine_identity,
    wasmtime_version,
)
from runwasm.wasm.sandbox import FEATURES, Sandbox

__all__ = ["ENGINE_FINGERPRINT", "cpu_fingerprint", "engine_fingerprint", "engine_identity", "make_engine",
           "wasmtime_version"]


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
