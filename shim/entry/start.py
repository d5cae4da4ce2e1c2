"""The ``start`` action: find or launch the group's server and tell containerd its address.

Steps (shim-protocol.md §4.5): decide the protocol, compute the group and socket path, bind
and listen (or reuse a live server on EADDRINUSE), hand the listening socket to the node
server of this containerd (``shim/common/node_handoff.py``) or, when there is none or it
refuses, spawn the long-lived server with the listening socket inherited and stdio on
/dev/null (containerd reads our output with CombinedOutput and waits for every holder of the
pipe), write ``<bundle>/address``, reply.
Nothing but the reply may reach stdout or stderr on success.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from dataclasses import asdict
from typing import Any, Literal

from runwasm.shim.common import naming, node_handoff
from runwasm.shim.entry import bootstrap
from runwasm.shim.entry.bootstrap import Settings
from runwasm.shim.entry.flags import Flags

SERVER_ACTION = "_runwasm_serve"  # never an action word containerd sends
ENV_SETTINGS = "RUNWASM_SHIM_SETTINGS"
ENV_LISTEN_FD = "RUNWASM_SHIM_LISTEN_FD"
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the terminating NUL


class StartError(Exception):
    """start cannot proceed; the message goes to containerd's error for the user."""


def _bind(path: str) -> socket.socket | None:
    """Bind+listen on ``path``; None when a live server already owns it."""
    if len(path.encode()) > MAX_SOCKET_PATH:
        raise StartError(f"shim socket path {path!r} is {len(path.encode())} bytes, over the {MAX_SOCKET_PATH}-byte "
                         "limit of unix sockets: use a shorter socket_dir (containerd allows at most 42 characters)")
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    for _ in range(2):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
        except OSError as err:
            sock.close()
            if err.errno != errno.EADDRINUSE:
                raise StartError(f"failed to bind shim socket {path!r}: {err.strerror or err}") from err
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                return None  # a server for this group is alive: reuse it
            except OSError:
                os.unlink(path)  # stale socket: remove it and bind again
            finally:
                probe.close()
            continue
        os.chmod(path, 0o600)
        sock.listen(128)
        return sock
    raise StartError(f"failed to bind shim socket {path!r}: still in use after removing a stale socket")


def settings_doc(settings: Settings, sock_path: str) -> dict[str, Any]:
    """The JSON document a server is started with."""
    return {**asdict(settings), "options": None, "socket_path": sock_path,
            "options_hex": [settings.options[0], settings.options[1].hex()] if settings.options else None}


def settings_from_doc(doc: dict[str, Any]) -> tuple[Settings, str]:
    """Inverse of ``settings_doc``: (settings, socket path)."""
    doc = dict(doc)
    socket_path = doc.pop("socket_path")
    opts = doc.pop("options_hex")
    doc["options"] = (opts[0], bytes.fromhex(opts[1])) if opts else None
    return Settings(**doc), socket_path


def trace_handoff(env: dict[str, str], started_ns: int) -> dict[str, str]:
    """start -> server trace hand-off (``runwasm.shim.common.otel_env.handoff_env``): the environment
    carrier start inherited, moved into one variable; {} when traces are off (nothing imported)."""
    from runwasm.shim.common import otel_env

    try:
        if not otel_env.parse(env).traces:
            return {}
    except otel_env.OtelConfigError:
        return {}  # the server reports it in the log
    for var in otel_env.ENV_CARRIER.values():
        env.pop(var, None)
    return otel_env.handoff_env(os.environ, started_ns)


def node_socket(settings: Settings) -> str:
    """The node server socket this group may be handed to (``shim/server/node.py``), or "" when
    the group gets a server of its own: outside a template child (the exec'd path, tracing on),
    a Sandbox-API group (a bundle without config.json), or ``RUNWASM_NODE_SERVER=off``."""
    from runwasm.shim import template

    if not template.in_template_child or not node_handoff.enabled(os.environ):
        return ""
    if not os.path.exists(os.path.join(settings.bundle, "config.json")):
        return ""
    from runwasm.shim.template import key

    fields = {"grpc": settings.grpc_address, "ttrpc": settings.ttrpc_address, "binary": settings.containerd_binary,
              "socket_dir": settings.socket_dir, "debug": settings.debug}
    nkey = node_handoff.node_key(key.install_key(), key.namespaces(), fields, os.environ)
    return node_handoff.socket_path(key.directory(os.environ), nkey)


def _spawn_first(settings: Settings, sock: socket.socket, sock_path: str, started_ns: int, node_path: str) -> None:
    """No node server took the group: claim the node socket here, before the fork (a ``start``
    arriving while the new server boots then queues its offer on that socket instead of forking a
    server of its own), and fork the server that will hold it. When another node server still
    holds the lock (it is stalled or exiting) the server serves this group alone."""
    claimed = None
    if node_path:
        got = _claim_or_hand_over(node_path, sock, settings_doc(settings, sock_path))
        if got == "adopted":
            return
        claimed = got
    try:
        spawn_server(settings, sock, sock_path, started_ns, node_path, claimed)
    finally:
        if claimed is not None:  # the forked server holds its own copies (the lock stays held)
            claimed[0].close()
            os.close(claimed[1])


CLAIM_RACE_SECONDS = 1.0


def _claim_or_hand_over(node_path: str, sock: socket.socket,
                        doc: dict[str, Any]) -> tuple[socket.socket, int] | Literal["adopted"] | None:
    """Claim the node socket; when a concurrent ``start`` holds its lock (it claimed it a moment
    ago and is forking the node server), offer the group to that socket instead. None: serve
    the group alone (the lock holder is stalled or exiting, or the claim failed; the server then
    tries to claim it itself and logs why it cannot)."""
    deadline = time.monotonic() + CLAIM_RACE_SECONDS
    while True:
        try:
            claimed = node_handoff.claim(node_path)
        except OSError:
            return None
        if claimed is not None:
            return claimed
        if node_handoff.offer(node_path, sock, doc) is not None:
            return "adopted"
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def spawn_server(settings: Settings, sock: socket.socket, sock_path: str, started_ns: int = 0,
                 node_path: str = "", claimed: tuple[socket.socket, int] | None = None) -> int:
    """Launch the server in its own session with /dev/null stdio and the socket inherited;
    ``node_path``: it may become the node server there; ``claimed``: the node socket and lock
    this ``start`` claimed for it (only for a server forked from the template: no exec)."""
    fd = sock.fileno()
    os.set_inheritable(fd, True)
    env = dict(os.environ)
    if node_path:
        env[node_handoff.ENV_NODE_SOCKET] = node_path
    if claimed is not None:
        env[node_handoff.ENV_NODE_CLAIMED] = node_handoff.encode_claimed(*claimed)
    env[ENV_SETTINGS] = json.dumps(settings_doc(settings, sock_path))
    env[ENV_LISTEN_FD] = str(fd)
    env.update(trace_handoff(env, started_ns or time.time_ns()))
    null = os.devnull
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, null, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, null, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, null, os.O_WRONLY, 0),
    ]
    # the server runs as this binary with -namespace/-id, like upstream shims, so `ps`/`pgrep -f
    # containerd-shim-runwasm` show which container group it serves
    ident = ["-namespace", settings.namespace, "-id", settings.id, SERVER_ACTION]
    program = sys.argv[0]
    if os.path.basename(program).startswith("containerd-shim-runwasm") and os.access(program, os.X_OK):
        program = os.path.abspath(program)
        argv = [program, *ident]
    else:  # run as `python -m runwasm.shim`
        program = sys.executable
        argv = [program, "-m", "runwasm.shim", *ident]
    from runwasm.shim import template

    if template.in_template_child:  # already a warm interpreter: fork the server (shim/template/)
        from runwasm.shim.template.server import fork_server

        return fork_server(argv, env, sock)
    return os.posix_spawn(program, argv, env, file_actions=actions, setsid=True)


def run(flags: Flags, stdin: bytes) -> tuple[bytes, int]:
    """Perform start; returns (stdout bytes, exit code)."""
    started_ns = time.time_ns()
    settings = bootstrap.detect(flags, stdin, os.environ, os.getcwd())
    if not settings.id or not settings.namespace:
        raise StartError("start needs -id and -namespace (or containerd 2.3 bootstrap parameters on stdin)")
    if settings.options is not None:  # a bad configuration fails here, where the user sees the message
        from runwasm.shim.common import options
        from runwasm.shim.common.errors import InvalidArgumentError

        try:
            options.parse(settings.options, source="runtime options")
        except InvalidArgumentError as err:
            raise StartError(str(err)) from err
    group = naming.group_id(naming.bundle_annotations(settings.bundle), settings.id)
    path = naming.socket_path(settings.socket_dir, settings.grpc_address, settings.namespace, group)
    address = "unix://" + path
    sock = _bind(path)
    if sock is not None:
        try:
            node_path = node_socket(settings)
            if not node_path or node_handoff.offer(node_path, sock, settings_doc(settings, path)) is None:
                _spawn_first(settings, sock, path, started_ns, node_path)
        except OSError as err:
            os.unlink(path)
            raise StartError(f"failed to launch shim server: {err}") from err
        finally:
            sock.close()
    with open(os.path.join(settings.bundle, "address"), "w") as f:
        f.write(address)  # no newline: 1.6/1.7 read it untrimmed on restart
    if settings.mode == "bootstrap":
        return bootstrap.encode_result(address), 0
    return address.encode(), 0
