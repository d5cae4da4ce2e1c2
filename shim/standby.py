"""Warm standby: an idle server that the next ``start`` adopts instead of booting a new one.

Booting a server costs ~105 ms of Python imports plus its zygote's preload; that is most of what
runwasm adds to ``ctr run``. With the runtime option ``StandbySeconds = N`` a server whose last
container is gone (Shutdown) does not exit at once: it closes its group socket and waits up to N
seconds on a *standby socket*, one per containerd instance and namespace
(``<socket_dir>/runwasm-standby-<hash>``). A ``start`` that needs a new server first offers the
job to that socket: it sends its settings (JSON) with the group's already bound, listening socket
attached (SCM_RIGHTS); the standby answers ``ok`` and becomes that group's server (new log FIFO,
new id), or the offer fails and ``start`` launches a server as usual. Only one standby exists per
key; a second idle server exits. The standby socket is 0600 and the peer's uid is checked.

This module is imported by ``start``: stdlib only.
"""

from __future__ import annotations

import array
import hashlib
import json
import os
import posixpath
import socket
import struct
from typing import Any

MAX_OFFER = 64 * 1024
OK = b"ok"


def standby_path(socket_dir: str, grpc_address: str, namespace: str) -> str:
    digest = hashlib.sha256(f"runwasm-standby\0{grpc_address}\0{namespace}".encode()).hexdigest()[:32]
    return posixpath.join(socket_dir, f"runwasm-standby-{digest}")


def offer(path: str, settings_doc: dict[str, Any], listener: socket.socket, timeout: float = 3.0) -> bool:
    """Hand the group's listening socket and settings to a standby server; True if it took them.

    An idle standby answers at once; the generous timeout only guards against a standby that
    received the socket but could not answer in time, which would leave two servers on it."""
    if not os.path.exists(path):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(timeout)
            s.connect(path)
            payload = json.dumps(settings_doc).encode()
            s.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [listener.fileno()]))])
            return s.recv(16) == OK
    except OSError:
        return False


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def bind(path: str) -> socket.socket | None:
    """Listen on the standby socket; None when another live standby already owns it."""
    for _ in range(2):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.bind(path)
        except FileNotFoundError:
            sock.close()
            return None  # the socket dir is gone: nothing to stand by for
        except OSError:
            sock.close()
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                probe.connect(path)
                return None  # another standby is alive
            except OSError:
                try:
                    os.unlink(path)  # stale
                except OSError:
                    return None
            finally:
                probe.close()
            continue
        os.chmod(path, 0o600)
        sock.listen(4)
        return sock
    return None


def receive(conn: socket.socket) -> tuple[dict[str, Any], socket.socket]:
    """Read one offer (settings document + listening socket); raises OSError/ValueError."""
    msg, anc, _flags, _addr = conn.recvmsg(MAX_OFFER, socket.CMSG_SPACE(4))
    fds: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - len(data) % arr.itemsize])
            fds.extend(arr)
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"standby offer: expected one listening socket, got {len(fds)} fds")
    doc = json.loads(msg)
    if not isinstance(doc, dict):
        os.close(fds[0])
        raise ValueError("standby offer: settings are not a JSON object")
    return doc, socket.socket(fileno=fds[0])
