"""google.rpc status codes and the exception that carries one across a ttrpc call.

Stdlib only: the shim's ``start`` path may import this module.

Contract: an :class:`RpcError` raised by a server handler becomes ``Response.status`` with the same
code and message; a client call that receives a non-zero status raises an :class:`RpcError` with
that code and message. ``str(err)`` is exactly the message, so callers can match upstream texts
such as ``"container not created: not found"``.
"""

from __future__ import annotations

import enum

__all__ = ["Code", "RpcError"]


class Code(enum.IntEnum):
    """The google.rpc.Code values (``google/rpc/code.proto``), as carried in ``Status.code``."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def from_wire(cls, value: int) -> Code:
        """Map a wire ``Status.code`` to a :class:`Code`; values outside 0..16 become UNKNOWN."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


class RpcError(Exception):
    """A ttrpc call failed with a non-OK google.rpc status.

    Attributes:
        code: the status code; never :attr:`Code.OK`.
        message: the status message, verbatim (``str(err) == err.message``).
    """

    code: Code
    message: str

    def __init__(self, code: Code, message: str) -> None:
        code = Code(code)
        if code == Code.OK:
            raise ValueError("RpcError needs a non-OK code, got Code.OK")
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"RpcError({self.code.name}, {self.message!r})"
