"""The control channel between the shim and one workload process.

Like runc's init pipe: the shim creates a SOCK_SEQPACKET socket pair, keeps one end and hands the
other to the workload (fd name ``control``). Each packet is one JSON object.

Workload -> shim, exactly one of, after set-up:
    {"type": "ready", "pid": <pid inside the workload's own view>}
    {"type": "error", "kind": "<error class name>", "status": "<its status>", "message": "<text>"}
Shim -> workload:
    {"type": "start"}             run user code now
EOF on either side means the peer is gone. A workload that sees EOF before ``start`` exits at
once with status 1 without running user code; that is how the shim aborts a Create.

This module is imported by the workload side (wasm/, linux/) and by the shim; it has no
dependencies beyond the stdlib.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

MAX_PACKET = 64 * 1024


class ControlChannelError(Exception):
    """The peer sent something that is not a control message, or went away."""

    status = "unavailable"


def socketpair() -> tuple[socket.socket, socket.socket]:
    """Return (shim end, workload end); both close-on-exec."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    """Send one message; raises ControlChannelError if the peer is gone."""
    data = json.dumps(message).encode()
    if len(data) > MAX_PACKET:
        raise ControlChannelError(f"control message too large: {len(data)} > {MAX_PACKET} bytes")
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError) as err:
        raise ControlChannelError("control peer went away") from err


def decode(data: bytes) -> dict[str, Any]:
    """Decode one packet; empty bytes (EOF) raise ControlChannelError."""
    if not data:
        raise ControlChannelError("control channel closed by peer")
    try:
        msg = json.loads(data)
    except ValueError as err:
        raise ControlChannelError(f"invalid control message: {data[:80]!r}") from err
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ControlChannelError(f"invalid control message: expected an object with 'type', got {msg!r}")
    return msg


def recv(sock: socket.socket) -> dict[str, Any]:
    """Block until one message arrives."""
    return decode(sock.recv(MAX_PACKET))


# Workload side helpers -------------------------------------------------------------------------


def report_ready(fd: int, stop_signal: int | None = None) -> None:
    """Tell the shim set-up succeeded (workload side). ``stop_signal``: the signal the shim must
    send when asked for SIGTERM (a workload that drains on another one, e.g. ``wasmtime serve``)."""
    msg: dict[str, Any] = {"type": "ready", "pid": os.getpid()}
    if stop_signal is not None:
        msg["stop_signal"] = stop_signal
    with socket.socket(fileno=os.dup(fd)) as sock:
        send(sock, msg)


def report_error(fd: int, err: BaseException) -> None:
    """Tell the shim set-up failed, with the error's class name, its ``status`` (the meaning every
    runwasm error carries, e.g. ``"not_found"``) and message (workload side)."""
    status = getattr(err, "status", None)
    msg: dict[str, Any] = {"type": "error", "kind": type(err).__name__, "message": str(err)}
    if isinstance(status, str):
        msg["status"] = status
    with socket.socket(fileno=os.dup(fd)) as sock:
        try:
            send(sock, msg)
        except ControlChannelError:
            pass  # the shim is gone; nobody is left to tell


def wait_start(fd: int) -> None:
    """Block until the shim says ``start``; on EOF or anything else exit(1) at once."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        try:
            msg = recv(sock)
        except (ControlChannelError, OSError):
            os._exit(1)
        if msg.get("type") != "start":
            os._exit(1)
