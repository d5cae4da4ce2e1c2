"""Hand a group's listening socket to the node server (``start`` side and wire format).

One shim server process (the *node server*, ``shim/server/node.py``) hosts every group of one
containerd: ``start`` binds the group's socket as always, then offers the bound listener to the
node server instead of forking a server of its own. Protocol, one SOCK_SEQPACKET packet each
way on ``node-<key>.sock`` (in the template directory: 0700, the socket 0600, the peer's uid
checked with SO_PEERCRED):

    start -> node   b"RWN1\\0" + JSON {"settings": <start.settings_doc>}, the listener attached
                    (SCM_RIGHTS, exactly one fd)
    node -> start   b"adopted <pid>" once the group is set up (its ttrpc server, publisher and
                    log are created before the reply, and it serves right after), or
                    b"refused <reason>" (exiting, bad message, another user)

``offer`` returns the node server's pid, or None: no node server, refused, unreachable, or no
answer within ``timeout``; the caller then forks a per-group server on the same listener, so
containerd never notices. The node server adopts a group only if its reply was delivered, so
a ``start`` that gave up is not served twice (the only window left: a reply written in the
instant the caller's timeout fires, with a node server stalled for ``timeout`` seconds).

The key names what a server takes from its ``start`` beyond the group's own settings:
containerd's addresses and binary, the socket directory, the debug flag, the namespaces, and
the ``RUNWASM_*``/``OTEL_*`` environment. Groups of another containerd (a test daemon, a
second installation) get a node server of their own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import struct
from collections.abc import Mapping
from typing import Any

MAGIC = b"RWN1"
MAX_MESSAGE = 64 * 1024
ENV_SWITCH = "RUNWASM_NODE_SERVER"  # "off": one server process per group, as before
ENV_NODE_SOCKET = "RUNWASM_SHIM_NODE_SOCKET"  # in a forked server's environment: become this node server
# "<listener fd>,<lock fd>": the node socket and its lock, claimed by the start that forked the server
ENV_NODE_CLAIMED = "RUNWASM_SHIM_NODE_CLAIMED"
OFFER_TIMEOUT = 10.0
# per-start variables that do not make servers different
_PER_START = frozenset({"RUNWASM_SHIM_SETTINGS", "RUNWASM_SHIM_LISTEN_FD", "RUNWASM_SHIM_NODE_SOCKET",
                        "RUNWASM_SHIM_NODE_CLAIMED", "RUNWASM_FORKED_BY_TEMPLATE", "RUNWASM_TRACE_HANDOFF"})


class HandoffError(ValueError):
    """A handoff message that is not one."""


def enabled(env: Mapping[str, str]) -> bool:
    return env.get(ENV_SWITCH, "") != "off"


def node_key(install: str, namespaces: str, fields: Mapping[str, object], env: Mapping[str, str]) -> str:
    """A short name for "servers that would be identical apart from their groups"."""
    # only on the template's path (the exec'd start never computes a key); not hashlib: see naming
    from runwasm.shim.common.naming import sha256_hex

    relevant = sorted((k, v) for k, v in env.items()
                      if k.startswith(("RUNWASM_", "OTEL_")) and k not in _PER_START)
    text = json.dumps([install, namespaces, sorted((k, str(v)) for k, v in fields.items()), relevant])
    return sha256_hex(text.encode())[:20]


def socket_path(directory: str, key: str) -> str:
    return os.path.join(directory, f"node-{key}.sock")


def lock_path(sock_path: str) -> str:
    return sock_path.removesuffix(".sock") + ".lock"


def encode_offer(settings_doc: Mapping[str, Any]) -> bytes:
    return MAGIC + b"\0" + json.dumps({"settings": dict(settings_doc)}).encode()


def decode_offer(data: bytes, fds: list[int]) -> dict[str, Any]:
    """The settings document of an offer; raises HandoffError (the caller closes ``fds``)."""
    head, sep, body = data.partition(b"\0")
    if head != MAGIC or not sep:
        raise HandoffError("not a runwasm handoff offer")
    if len(fds) != 1:
        raise HandoffError(f"expected exactly one listening socket, got {len(fds)} fds")
    try:
        doc = json.loads(body)
    except ValueError as err:
        raise HandoffError(f"offer is not JSON: {err}") from err
    settings = doc.get("settings") if isinstance(doc, dict) else None
    if not isinstance(settings, dict) or not isinstance(settings.get("socket_path"), str):
        raise HandoffError("offer has no settings with a socket_path")
    return settings


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def offer(node_sock: str, listener: socket.socket, settings_doc: Mapping[str, Any],
          timeout: float = OFFER_TIMEOUT) -> int | None:
    """Offer ``listener`` (bound and listening) to the node server at ``node_sock``; its pid
    once adopted, None when the caller must serve the group itself."""
    msg = encode_offer(settings_doc)
    if len(msg) > MAX_MESSAGE:
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.settimeout(timeout)
        try:
            s.connect(node_sock)
            if peer_uid(s) != os.geteuid():
                return None
            socket.send_fds(s, [msg], [listener.fileno()])
            reply = s.recv(256)
        except OSError:
            return None
    finally:
        s.close()
    if reply.startswith(b"adopted "):
        try:
            return int(reply[8:])
        except ValueError:
            return None
    return None


def listen_in_place(path: str, backlog: int) -> socket.socket:
    """A SOCK_SEQPACKET listener at ``path`` (0600, root's template directory), which appears
    only once it accepts: bound under a temporary name, then renamed over whatever a dead owner
    left (the caller holds the lock that makes it the owner). The node socket and the
    template's own socket (``shim/template/process.py``)."""
    tmp = f"{path}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old = os.umask(0o177)
    try:
        lst.bind(tmp)
        os.chmod(tmp, 0o600)
        lst.listen(backlog)
        os.rename(tmp, path)
    except OSError:
        lst.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.umask(old)
    return lst


def take_lock(path: str) -> int | None:
    """An exclusive flock (non-blocking) on the lock file ``path``: its fd, or None when another
    process holds it. The file is removed by its holder when it lets go (``drop_lock``), so lock
    files do not pile up for every containerd (or installation) a node ever ran; a lock taken on
    a file that was removed meanwhile (opened just before its holder unlinked it) is let go
    and taken again on the file now at ``path``. OSError when the file cannot be opened."""
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def drop_lock(path: str, fd: int) -> None:
    """Let go of a lock ``take_lock`` gave: remove its file (still held, so nobody can have
    taken it on that file) unless another file took its place, then close ``fd``. A holder that
    dies without this leaves the file, which the next ``take_lock`` reuses."""
    try:
        with contextlib.suppress(OSError):
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)
    finally:
        os.close(fd)


def claim(path: str) -> tuple[socket.socket, int] | None:
    """Become the node server at ``path``: (listening socket, lock fd), or None when another
    one holds ``node-<key>.lock`` (flock, non-blocking; released when every copy of the fd is
    closed). The socket is bound under a temporary name, made 0600 and listening before it is
    renamed into place, so whoever finds ``path`` can connect (a stale one from a dead node
    server is replaced). ``start`` claims it before it forks the first server (so a second
    ``start`` arriving before that server runs queues on the socket instead of forking a server
    of its own), and the server claims it itself when it was not handed one."""
    lock = take_lock(lock_path(path))
    if lock is None:
        return None
    try:
        lst = listen_in_place(path, 64)
    except OSError:
        drop_lock(lock_path(path), lock)
        raise
    return lst, lock


def encode_claimed(listener: socket.socket, lock: int) -> str:
    return f"{listener.fileno()},{lock}"


def decode_claimed(value: str) -> tuple[socket.socket, int] | None:
    """The claim ``encode_claimed`` described (fds inherited across the fork); None for ""."""
    if not value:
        return None
    lst, _, lock = value.partition(",")
    return socket.socket(fileno=int(lst)), int(lock)
