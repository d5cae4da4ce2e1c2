"""Shim errors, and the one table that maps every runwasm error to a google.rpc code.

    ShimError
    ├── NotFoundError            5  unknown container/exec, process already finished
    ├── AlreadyExistsError       6  duplicate container or exec id
    ├── InvalidArgumentError     3  bad request, bad id, bad spec or module
    ├── FailedPreconditionError  9  wrong state (illegal transition)
    ├── UnimplementedError      12  unsupported RPC or feature (never raised by Create)
    └── UnavailableError        14  a dependency is gone (zygote, containerd)

Errors from the other packages carry a ``status`` class attribute (``"not_found"``,
``"invalid_argument"``, ...) or are known classes (``SpecError``); ``to_status`` turns any
exception into (code, message) once, at the RPC edge. Anything unrecognised is UNKNOWN (2)
and is logged with its traceback by the caller.
"""

from __future__ import annotations

import errno

NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT, FAILED_PRECONDITION = 5, 6, 3, 9
UNIMPLEMENTED, UNAVAILABLE, UNKNOWN, INTERNAL, DEADLINE_EXCEEDED = 12, 14, 2, 13, 4
PERMISSION_DENIED, RESOURCE_EXHAUSTED = 7, 8


class ShimError(Exception):
    status = "unknown"


class NotFoundError(ShimError):
    status = "not_found"


class AlreadyExistsError(ShimError):
    status = "already_exists"


class InvalidArgumentError(ShimError):
    status = "invalid_argument"


class RootfsPlanError(InvalidArgumentError):
    """containerd's rootfs mount list cannot be honoured as given (``shim/common/rootfs_plan.py``)."""


class FailedPreconditionError(ShimError):
    status = "failed_precondition"


class UnimplementedError(ShimError):
    status = "unimplemented"


class UnavailableError(ShimError):
    status = "unavailable"


STATUS_CODES: dict[str, int] = {
    "not_found": NOT_FOUND,
    "already_exists": ALREADY_EXISTS,
    "invalid_argument": INVALID_ARGUMENT,
    "failed_precondition": FAILED_PRECONDITION,
    "unimplemented": UNIMPLEMENTED,
    "unavailable": UNAVAILABLE,
    "permission_denied": PERMISSION_DENIED,
    "resource_exhausted": RESOURCE_EXHAUSTED,
    "internal": INTERNAL,
    "deadline_exceeded": DEADLINE_EXCEEDED,
    "unknown": UNKNOWN,
}

# errdefs-style suffixes containerd's ToNative strips again (shim-protocol.md §12)
_SUFFIX = {NOT_FOUND: "not found", ALREADY_EXISTS: "already exists", INVALID_ARGUMENT: "invalid argument",
           FAILED_PRECONDITION: "failed precondition", UNIMPLEMENTED: "not implemented",
           UNAVAILABLE: "unavailable"}


def status_of(err: BaseException) -> str:
    """The status name of any exception: its ``status`` attribute, or a known class."""
    status = getattr(err, "status", None)  # instance first: WorkloadSetupError sets it per error
    if isinstance(status, str) and status in STATUS_CODES:
        return status
    from runwasm.oci.runtime_spec import SpecError

    if isinstance(err, SpecError):
        return "invalid_argument"
    if isinstance(err, TimeoutError):
        return "deadline_exceeded"
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "resource_exhausted"
    return "unknown"


def to_status(err: BaseException) -> tuple[int, str]:
    """(google.rpc code, message) for an exception, with containerd's errdefs suffix."""
    code = STATUS_CODES[status_of(err)]
    message = str(err) or type(err).__name__
    suffix = _SUFFIX.get(code)
    if suffix and not message.endswith(suffix):
        message = f"{message}: {suffix}"
    return code, message
