"""Errors raised by ``runwasm.oci``.

Tree::

    OciError                      base of everything this package raises
    ├── NotFoundError             a blob, image, layer or mount is not there
    ├── AlreadyExistsError        the name or digest is taken
    ├── InvalidArgumentError      malformed input: JSON, tar, digest, media type, path
    │   ├── DigestMismatchError   content does not hash to the expected digest
    │   └── UnsupportedMediaTypeError  a media type this package does not handle
    ├── FailedPreconditionError   the state does not allow the operation (e.g. image in use)
    └── UnavailableError          the kernel or a tool lacks a feature (EROFS, overlay, dm)

Each class carries ``status`` (its meaning, spelled like a google.rpc code); ``runwasm.shim.common.errors``
maps that to the code; messages follow the form
"failed to <verb> <object>: <cause>" with ids, paths and digests quoted with ``!r``.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "DigestMismatchError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "OciError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
]


class OciError(Exception):
    """Base class of all errors raised by ``runwasm.oci``."""

    status = "internal"


class NotFoundError(OciError):
    """A blob, image, layer, mount or state record does not exist."""

    status = "not_found"


class AlreadyExistsError(OciError):
    """An image name, blob or mountpoint is already in use."""

    status = "already_exists"


class InvalidArgumentError(OciError):
    """Malformed input: JSON document, tar stream, digest, reference or path."""

    status = "invalid_argument"


class DigestMismatchError(InvalidArgumentError):
    """Content hashed to a different digest (or size) than the descriptor promised."""


class UnsupportedMediaTypeError(InvalidArgumentError):
    """A layer or manifest media type this package cannot handle."""


class FailedPreconditionError(OciError):
    """The current state forbids the operation (image in use, target not empty, ...)."""

    status = "failed_precondition"


class UnavailableError(OciError):
    """A kernel feature or system tool needed for the operation is missing."""

    status = "unavailable"
