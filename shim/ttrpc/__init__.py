"""ttrpc, containerd's lightweight RPC protocol, for unary calls over Unix sockets.

``frame``, ``status`` and ``streams`` are stdlib-only and sans-I/O (safe for the shim's ``start``
path); ``server`` and ``client`` add asyncio and protobuf. Importing this package imports all of
them: import ``runwasm.shim.ttrpc.frame`` or ``.status`` directly where imports must stay light.
"""

from runwasm.shim.ttrpc.client import Client, ClientClosedError, Metadata
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
from runwasm.shim.ttrpc.server import Handler, Peer, RequestContext, Server
from runwasm.shim.ttrpc.status import Code, RpcError

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
