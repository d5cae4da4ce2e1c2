"""Launcher side: hand this exec (``start``/``delete``/``-info``) to the installation's template.

Protocol on a SOCK_SEQPACKET unix socket, one packet each way:

    launcher -> template  b"RWT1\\0" + NUL-joined fields: install key, namespaces, cwd, umask
                          (octal), argc, argv..., then KEY=VALUE environment entries; fds 0, 1, 2
                          attached
    template -> launcher  b"exit <code>" once the action finished (its output already written
                          to the fds), or b"refused <reason>"

``forward`` returns the exit code, or None when the caller must run the action itself: no
template, a refusal (wrong installation or version, not root, other namespaces than the
template's: its forked server would inherit the template's, not this caller's), or a template child that died
before answering (every action is idempotent: ``start`` reuses a live server or rebinds a stale
socket, ``delete`` cleans what is left). ``launch`` starts a template in the background.

Runs in the launcher under ``python -IS`` before anything else: ``_socket``, ``os``, ``sys`` and
``key`` only.
"""

from __future__ import annotations

import os
import sys

MAGIC = b"RWT1"
MAX_REQUEST = 256 * 1024
FORWARDED = ("start", "delete")


def encode_request(key: str, namespaces: str, cwd: str, umask: int, argv: list[str], env: dict[str, str]) -> bytes:
    fields = [key, namespaces, cwd, f"{umask:o}", str(len(argv)), *argv, *(f"{k}={v}" for k, v in env.items())]
    return MAGIC + b"\0" + "\0".join(fields).encode("utf-8", "surrogateescape")


def decode_request(data: bytes) -> tuple[str, str, str, int, list[str], dict[str, str]]:
    """Inverse of ``encode_request``; raises ValueError on anything else."""
    head, sep, body = data.partition(b"\0")
    if head != MAGIC or not sep:
        raise ValueError("not a runwasm template request")
    fields = body.decode("utf-8", "surrogateescape").split("\0")
    if len(fields) < 5:
        raise ValueError("truncated template request")
    key, namespaces, cwd, umask, argc = fields[:5]
    n = int(argc)
    argv = fields[5:5 + n]
    if len(argv) != n:
        raise ValueError("truncated template request")
    env = dict(item.partition("=")[::2] for item in fields[5 + n:] if item)
    return key, namespaces, cwd, int(umask, 8), argv, env


# the variables without which otel_env.parse(env).any is False (tests check they agree)
_OTEL_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                   "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")


def _exports_telemetry(env: dict[str, str] | os._Environ[str]) -> bool:
    """True when ``OTEL_*`` configures an exporter. Such a shim takes the exec'd path: servers
    forked from a template that has served for a while were seen to export nothing (their spans
    never reached the collector, in the suite's tracing tests after other tests had used the
    template), while exec'd servers export reliably; until that is understood, tracing costs the
    exec'd start-up instead of losing spans.

    Only an endpoint variable turns an exporter on (``otel_env.parse``), so without one the answer
    is False without importing ``otel_env`` (dataclasses, json, re: ~40 ms of the launcher's
    ~55 ms before it reached the template, on every forwarded ``start`` and ``delete``)."""
    if not any(env.get(var) for var in _OTEL_ENDPOINTS):
        return False
    from runwasm.shim.common import otel_env

    try:
        return otel_env.parse(env).any
    except otel_env.OtelConfigError:
        return True  # the exec'd server reports the bad configuration in its log


def forward(argv: list[str]) -> int | None:
    """Run ``argv`` (the launcher's, action last) in a child of the template; None to run it here."""
    from runwasm.shim.template import key as keymod

    if not argv or argv[-1] not in FORWARDED or not keymod.enabled(os.environ):
        return None
    if _exports_telemetry(os.environ):
        return None
    import _socket

    install = keymod.install_key()
    path = os.path.join(keymod.directory(os.environ), f"template-{install}.sock")
    umask = os.umask(0)
    os.umask(umask)
    req = encode_request(install, keymod.namespaces(), os.getcwd(), umask, argv, dict(os.environ))
    if len(req) > MAX_REQUEST:
        return None
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        try:
            s.connect(path)
        except OSError:
            return None
        fds = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in (0, 1, 2))
        try:
            s.sendmsg([req], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
            reply = s.recv(256)
        except OSError:
            return None
    finally:
        s.close()
    if reply.startswith(b"exit "):
        try:
            return int(reply[5:])
        except ValueError:
            return None
    return None  # refused, or the template's child died before answering


READY_TIMEOUT = 5.0  # how long the first start waits for a template it launched
ENV_READY_TIMEOUT = "RUNWASM_TEMPLATE_READY_TIMEOUT"  # seconds, overrides READY_TIMEOUT
LOCKED_EXIT = 3  # a template's exit code when another one (maybe still importing) holds the lock
ENV_LAUNCHED = "RUNWASM_TEMPLATE_LAUNCHED"  # set by the native front: the pid of the template it spawned


def run(argv: list[str]) -> int | None:
    """``forward``; when no template listens, a ``start`` launches one and waits (up to
    READY_TIMEOUT) for it to listen, then forwards: the first container on a node pays one warm-up
    instead of an exec'd server's boot plus a template's boot competing for the CPUs. None: run
    the action here (no template came up, or it refused)."""
    from runwasm.shim.template import key as keymod

    launched = _launched_by_front()
    code = forward(argv)
    if code is not None or not argv or argv[-1] != "start" or not keymod.enabled(os.environ):
        return code
    path = os.path.join(keymod.directory(os.environ), f"template-{keymod.install_key()}.sock")
    if os.path.exists(path) and launched is None:
        # a dead template's socket, or one that refused: run the action here, and launch a
        # template for the next container (it takes over unless a live one holds the lock)
        launch(argv[0])
        return None
    pid = launched if launched is not None else launch_pid(argv[0])
    if pid is None:
        return None
    import time

    try:
        timeout = float(os.environ.get(ENV_READY_TIMEOUT) or READY_TIMEOUT)
    except ValueError:
        timeout = READY_TIMEOUT
    deadline = time.monotonic() + timeout
    child_running = True
    while not os.path.exists(path) and time.monotonic() < deadline:
        if child_running:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                child_running = False
                if os.waitstatus_to_exitcode(status) != LOCKED_EXIT:
                    return None  # it failed: run the action here
        time.sleep(0.001)  # a stat per ms while the first container waits for the template
    return forward(argv)


def _launched_by_front() -> int | None:
    """The pid of the template the native front spawned just before exec'ing us (it found no
    socket: ``launch_template`` in scripts/launcher.c), taken out of the environment so that no
    action or server sees it; None when it spawned none (or the value is not a child's pid)."""
    value = os.environ.pop(ENV_LAUNCHED, "")
    if not value.isdigit():
        return None
    pid = int(value)
    try:  # ours? (a child of this process, which the front became); WNOWAIT: run() reaps it
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    return pid


KEPT_ENV = ("PATH", "LANG", "LC_ALL", "TZ")


def template_env(env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The template's own environment: node-wide, so none of the launching containerd's
    variables (TTRPC_ADDRESS, NAMESPACE, ...); each child takes its caller's environment."""
    return {k: v for k, v in env.items() if k in KEPT_ENV or k.startswith("RUNWASM_")}


def launch_pid(program: str) -> int | None:
    """``launch``, returning the template's pid (None if it could not be spawned)."""
    from runwasm.shim.template import key as keymod

    null = os.devnull
    actions = [(os.POSIX_SPAWN_OPEN, fd, null, os.O_RDONLY if fd == 0 else os.O_WRONLY, 0) for fd in (0, 1, 2)]
    try:
        return os.posix_spawn(program, [program, keymod.TEMPLATE_ACTION], template_env(os.environ),
                              file_actions=actions, setsid=True)
    except OSError:
        return None


def launch(program: str) -> OSError | None:
    """Start a template for this installation in the background (its own session, /dev/null
    stdio); it exits at once if another one is already listening. Returns the spawn error, if
    any: ``start`` may not print it (containerd reads its output as the reply) and works
    without a template, so the caller drops it."""
    from runwasm.shim.template import key as keymod

    if not keymod.enabled(os.environ):
        return None
    null = os.devnull
    actions = [(os.POSIX_SPAWN_OPEN, fd, null, os.O_RDONLY if fd == 0 else os.O_WRONLY, 0) for fd in (0, 1, 2)]
    try:
        os.posix_spawn(program, [program, keymod.TEMPLATE_ACTION], template_env(os.environ), file_actions=actions,
                       setsid=True)
    except OSError as err:
        return err
    return None
