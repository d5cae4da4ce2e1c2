"""The one socket write the asyncio ttrpc client and server share."""

from __future__ import annotations

import socket


def send_now(sock: socket.socket, frame: bytes) -> int:
    """Write what a non-blocking ``sock`` takes of ``frame`` now; 0 on any error (the
    connection's writer task, which gets the rest, meets the error again and handles it)."""
    try:
        return sock.send(frame)
    except OSError:
        return 0
