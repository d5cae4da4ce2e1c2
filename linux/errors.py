"""Errors raised by ``runwasm.linux``.

Tree (``status`` is the generic meaning ``runwasm.shim.common.errors`` maps to a google.rpc code)::

    LinuxError                    status "internal": base of everything this package raises
    ├── NotFoundError             "not_found": a path, binary, cgroup or process is not there
    ├── AlreadyExistsError        "already_exists": the container's cgroup or state is taken
    ├── InvalidArgumentError      "invalid_argument": a spec field we cannot apply as written
    ├── FailedPreconditionError   "failed_precondition": the state does not allow the operation
    ├── UnavailableError          "unavailable": the kernel lacks a feature (cgroup v2 controller,
    │                             user namespaces, seccomp)
    └── SetupError                "internal": a container set-up step failed (message names the
                                  step, the path or field, and the errno)

Messages: lower case, "failed to <verb> <object>: <cause>", paths and ids quoted with ``!r``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AlreadyExistsError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "LinuxError",
    "NotFoundError",
    "SetupError",
    "UnavailableError",
]


class LinuxError(Exception):
    """Base class of all errors raised by ``runwasm.linux``."""

    status: ClassVar[str] = "internal"


class NotFoundError(LinuxError):
    """A path, executable, cgroup, state record or process does not exist."""

    status: ClassVar[str] = "not_found"


class AlreadyExistsError(LinuxError):
    """The container id's cgroup or state record already exists."""

    status: ClassVar[str] = "already_exists"


class InvalidArgumentError(LinuxError):
    """A runtime spec field cannot be applied as written (unknown capability, bad mount option)."""

    status: ClassVar[str] = "invalid_argument"


class FailedPreconditionError(LinuxError):
    """The container is not in a state that allows the operation (e.g. init gone)."""

    status: ClassVar[str] = "failed_precondition"


class UnavailableError(LinuxError):
    """The kernel or host lacks a feature the spec needs."""

    status: ClassVar[str] = "unavailable"


class SetupError(LinuxError):
    """A container set-up step failed in the workload; the message names step, path and errno."""

    status: ClassVar[str] = "internal"
