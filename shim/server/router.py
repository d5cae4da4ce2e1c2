"""Decide, once per container, which executor runs it: wasmtime or the Linux executor.

Rules, in order:
1. The annotation ``io.containerd.runwasm.v1.executor`` = ``wasm`` | ``linux`` forces a choice;
   so does the runtime options' ``Executor`` (``shim/common/options.py``) when there is no annotation.
2. ``process.args[0]`` (its path part: ``path#export`` names a Wasm export) is resolved inside
   the rootfs like execvp would (absolute, cwd-relative, or searched in the spec's PATH).
3. A file starting with ``\\0asm`` (module or component) or WAT text goes to ``wasm``; an ELF
   binary (``\\x7fELF``) or a ``#!`` script goes to ``linux``.
4. Anything else is an InvalidArgumentError that says what was checked and what was found.

Pure apart from reading the first bytes of one file; no wasmtime import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from runwasm.oci.runtime_spec import RuntimeSpec
from runwasm.shim.common.errors import InvalidArgumentError, NotFoundError
from runwasm.wasm import detect, resolve
from runwasm.wasm.errors import WasmError

Kind = Literal["wasm", "linux"]
EXECUTOR_ANNOTATION = "io.containerd.runwasm.v1.executor"


@dataclass(frozen=True, slots=True)
class Route:
    """Where a container runs (``kind``) and why (``reason``, logged)."""

    kind: Kind
    reason: str


def _sniff(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(detect.SNIFF_BYTES)


def route(spec: RuntimeSpec, rootfs: Path, default: str = "auto", module: Path | None = None) -> Route:
    """``default`` is the runtime options' ``Executor``; the per-container annotation wins over it.
    ``module``: what ``module_file`` already found for this spec and rootfs (not resolved again)."""
    forced = spec.annotations.get(EXECUTOR_ANNOTATION, "")
    if forced:
        if forced not in ("wasm", "linux"):
            raise InvalidArgumentError(
                f"invalid annotation {EXECUTOR_ANNOTATION}={forced!r}: expected 'wasm' or 'linux'")
        return Route(forced, f"annotation {EXECUTOR_ANNOTATION}={forced}")  # type: ignore[arg-type]
    if default in ("wasm", "linux"):
        return Route(default, f"runtime options Executor={default}")  # type: ignore[arg-type]
    if spec.process is None or not spec.process.args:
        raise InvalidArgumentError("cannot choose an executor: process.args is empty in config.json")
    arg0 = spec.process.args[0]
    path, export = detect.parse_entrypoint(arg0)
    try:
        host = module if module is not None else resolve.resolve_module_path(rootfs, path, spec.process.env,
                                                                             spec.process.cwd)
        head = _sniff(host)
    except WasmError as err:
        raise NotFoundError(f"cannot run process.args[0] {arg0!r}: {err}") from err
    except OSError as err:
        raise NotFoundError(f"cannot run process.args[0] {arg0!r}: {err.strerror}") from err
    kind = detect.classify_bytes(head)
    if kind is not None:
        return Route("wasm", f"{arg0!r} is a Wasm {kind}")
    if export is None and (head.startswith(b"\x7fELF") or head.startswith(b"#!")):
        what = "an ELF binary" if head.startswith(b"\x7fELF") else "a #! script"
        return Route("linux", f"{arg0!r} is {what}")
    raise InvalidArgumentError(
        f"cannot run process.args[0] {arg0!r} (resolved to {str(host)!r}): expected a Wasm module or component "
        f"(\\0asm magic), WAT text, an ELF binary or a #! script; found first bytes {head[:8]!r}")


def module_in_rootfs(spec: RuntimeSpec, rootfs: Path) -> bool:
    """False when ``process.args[0]`` names nothing to run in the rootfs: ``args`` is empty or
    ``[""]``, or its path does not resolve to a regular file. Then the container's image may
    carry its module as a layer (``shim/server/image_module.py``)."""
    return module_file(spec, rootfs) is not None


def module_file(spec: RuntimeSpec, rootfs: Path) -> Path | None:
    """The host path of ``process.args[0]``'s file in the rootfs (``module_in_rootfs``), or None;
    ``route`` takes it back, so a Create resolves the path once."""
    if spec.process is None or not spec.process.args:
        return None
    path, _export = detect.parse_entrypoint(spec.process.args[0])
    if not path:
        return None
    try:
        host = resolve.resolve_module_path(rootfs, path, spec.process.env, spec.process.cwd)
    except WasmError:
        return None
    return host if host.is_file() else None
