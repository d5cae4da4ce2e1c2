"""Compile one module or component to its serialized artifact, in a process of its own.

Run by the shim server (``runwasm.shim.server.image_cache``) when the content store holds no
usable artifact for an image's Wasm layer: a child process keeps wasmtime and the compiler's
peak memory out of the long-lived server. Protocol::

    python -m runwasm.wasm.precompile < {"module": PATH, "kind": "module"|"component",
                                         "sandbox": Sandbox.to_json() | null, "out": PATH}

The artifact is written to a temporary file beside ``out`` and renamed over it. Exit 0 when
written; 2 when the input does not compile (wasmtime's message on stderr: the workload then
compiles it itself and reports the error the usual way); 1 on any other failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from runwasm.wasm.errors import InvalidModuleError, WasmError
from runwasm.wasm.node_key import write_atomic

EXIT_INVALID = 2


def compile_to(module: str, kind: str, sandbox_json: dict[str, object] | None, out: str) -> int:
    """Compile ``module`` (``kind``) with the engine of ``sandbox_json`` and write the artifact to
    ``out`` atomically; returns its size. Raises ``InvalidModuleError`` when it does not compile."""
    import wasmtime
    import wasmtime.component

    from runwasm.wasm.engine import make_engine
    from runwasm.wasm.sandbox import Sandbox

    engine = make_engine(Sandbox.from_json(sandbox_json) if sandbox_json else None)
    with open(module, "rb") as f:
        data = f.read()
    try:
        artifact: wasmtime.Module | wasmtime.component.Component
        if kind == "component":
            artifact = wasmtime.component.Component(engine, data)
        elif kind == "module":
            artifact = wasmtime.Module(engine, data)
        else:
            raise InvalidModuleError(f"failed to precompile {module!r}: unknown kind {kind!r}")
    except wasmtime.WasmtimeError as err:
        raise InvalidModuleError(f"failed to compile wasm {kind} {module!r}: {err}") from err
    blob = bytes(artifact.serialize())
    write_atomic(Path(out), blob)
    return len(blob)


def main() -> int:
    try:
        req = json.load(sys.stdin)
        compile_to(req["module"], req["kind"], req.get("sandbox"), req["out"])
    except (InvalidModuleError, WasmError) as err:
        print(err, file=sys.stderr)
        return EXIT_INVALID
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"precompile failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
