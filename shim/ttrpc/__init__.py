"""ttrpc, containerd's lightweight RPC protocol, for unary calls over Unix sockets.

``frame``, ``status`` and ``streams`` are stdlib-only and sans-I/O; ``server`` and ``client`` add
asyncio and protobuf. Importing this package (or ``runwasm.shim.ttrpc.frame``) loads only the
stdlib-only modules: the server and client names below are imported on first access, so the
shim's ``start`` path stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runwasm.shim.ttrpc.frame import (
    FLAG_NO_DATA,
    FLAG_REMOTE_CLOSED,
    FLAG_REMOTE_OPEN,
    HEADER_SIZE,
    MAX_MESSAGE,
    Decoder,
    Frame,
    MessageType,
    Oversized,
    OversizedMessageError,
    encode_frame,
    oversized_text,
)
from runwasm.shim.ttrpc.status import Code, RpcError

if TYPE_CHECKING:
    from runwasm.shim.ttrpc.client import Client, ClientClosedError, Metadata
    from runwasm.shim.ttrpc.server import Handler, Peer, RequestContext, Server

__all__ = [
    "FLAG_NO_DATA",
    "FLAG_REMOTE_CLOSED",
    "FLAG_REMOTE_OPEN",
    "HEADER_SIZE",
    "MAX_MESSAGE",
    "Client",
    "ClientClosedError",
    "Code",
    "Decoder",
    "Frame",
    "Handler",
    "Metadata",
    "MessageType",
    "Oversized",
    "OversizedMessageError",
    "Peer",
    "RequestContext",
    "RpcError",
    "Server",
    "encode_frame",
    "oversized_text",
]

_LAZY = {
    "Client": "client",
    "ClientClosedError": "client",
    "Metadata": "client",
    "Handler": "server",
    "Peer": "server",
    "RequestContext": "server",
    "Server": "server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
