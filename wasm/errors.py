"""Errors raised by the Wasm workload side (``runwasm.wasm``).

Every class carries a class attribute ``status``: the meaning of the failure, spelled like a
google.rpc code in snake case (``not_found``, ``invalid_argument``, ``failed_precondition``,
``permission_denied``, ``internal``). The shim maps errors generically: over the control
channel only the class *name* travels (``report_error`` sends ``type(err).__name__``), so
``STATUS_BY_KIND`` gives the status for a name without needing the exception object.

This module imports nothing beyond the stdlib.
"""

from __future__ import annotations

from typing import ClassVar


class WasmError(Exception):
    """Base class of every error raised by ``runwasm.wasm``."""

    status: ClassVar[str] = "internal"


class InvalidPayloadError(WasmError):
    """The spawn payload handed to the workload entry point is malformed."""

    status = "invalid_argument"


class InvalidEntrypointError(WasmError):
    """``process.args`` is empty, or ``args[0]`` is not a usable ``path[#export]``."""

    status = "invalid_argument"


class ModuleNotFoundInRootfsError(WasmError):
    """The module named by ``args[0]`` does not exist inside the container rootfs."""

    status = "not_found"


class PathEscapeError(WasmError):
    """Resolving a guest path would leave the rootfs (``..`` above ``/``, or a symlink out)."""

    status = "permission_denied"


class ModulePermissionError(WasmError):
    """The container's user may not read the module file (its mode, owner or a directory above it)."""

    status = "permission_denied"


class InvalidModuleError(WasmError):
    """The file is not a Wasm module/component/WAT, or it fails to parse, validate or compile."""

    status = "invalid_argument"


class ExportNotFoundError(WasmError):
    """The export to run (``_start``, ``#export``, ``wasi:cli/run``) is missing or has the wrong type."""

    status = "invalid_argument"


class LinkError(WasmError):
    """The module imports something the runtime does not provide (only WASI is linked)."""

    status = "failed_precondition"


class WasiSetupError(WasmError):
    """The WASI context could not be built (a preopen directory is missing, bad env...)."""

    status = "failed_precondition"


class HttpServeError(WasiSetupError):
    """A wasi:http component cannot be served: the wasmtime CLI is missing or unusable."""

    status = "failed_precondition"


class NoArtifactError(HttpServeError):
    """No precompiled artifact could be had for ``wasmtime-min`` (which cannot compile); never
    reported: the task then runs in process (``runwasm.wasm.min_run``)."""


class SandboxError(InvalidPayloadError):
    """A Wasm sandbox setting (runtime options or annotation) is invalid; the message names the key."""

    status = "invalid_argument"


def _all_subclasses(cls: type[WasmError]) -> list[type[WasmError]]:
    out: list[type[WasmError]] = [cls]
    for sub in cls.__subclasses__():
        out += _all_subclasses(sub)
    return out


STATUS_BY_KIND: dict[str, str] = {c.__name__: c.status for c in _all_subclasses(WasmError)}
"""Error class name (the ``kind`` of a control ``error`` message) -> status string."""
