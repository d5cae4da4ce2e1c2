"""Fork a server (usually the node server) from the template (instead of exec'ing a fresh interpreter).

``start`` running in a child of the template calls ``fork_server`` where it would otherwise
``posix_spawn`` the server. The child asks the template itself to fork it (``template_channel``,
``serve_fork_request``): the server then starts from the template's own image, not from a child
that has run ``start`` (every page that child wrote would be one more private page in the
server, and a third copy once the server's zygote, forked from it, and the server diverge;
measured in docs/design.md, "Memory per pod"). Without a channel (or when the template is gone
before the request could be sent) the child forks the server from itself as before. The result
must be indistinguishable, for containerd and for ``ps``, from the exec'd server:

- detached: double fork (re-parented to init, never a child of ``start`` or the template),
  its own session (``setsid``), stdio on /dev/null (containerd waits for every holder of
  ``start``'s output pipe), default signal dispositions and an empty signal mask, cwd ``/``;
- the environment ``start`` would have passed (containerd's, plus the settings and the
  listening fd, plus ``RUNWASM_FORKED_BY_TEMPLATE=<template pid>``), in ``os.environ`` and in
  ``/proc/<pid>/environ``, and the command line
  ``<shim binary> -namespace NS -id ID _runwasm_serve`` in ``/proc/<pid>/cmdline``
  (``PR_SET_MM``, root only; left as the template's when the kernel refuses);
- then ``server_main.serve_main()``, which forks the zygote before any thread starts.

With ``RUNWASM_SHIM_NODE_SOCKET`` in that environment (``start.node_socket``) the server becomes
the node server of its containerd (``shim/server/node.py``): later ``start`` children hand their
group's listener to it instead of forking another server.

The cgroup is the template's (the one containerd ran the first ``start`` in), as an exec'd
server has the cgroup of the ``start`` that spawned it.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import time
from collections.abc import Sequence

PR_SET_MM = 35
PR_SET_MM_MAP = 14  # allowed without CAP_SYS_RESOURCE when the exe link is left alone

# fds a forked server must not keep (the template's listener, the launcher connection); set
# by the template child before it runs the action
inherited_to_close: list[int] = []
# the template child's end of its channel to the template (``serve_fork_request``); set by the
# template child before it runs the action
template_channel: socket.socket | None = None
FORK_REPLY_TIMEOUT = 10.0
_MAX_FORK_REQUEST = 1 << 20
_MAX_FORK_FDS = 5  # listener, node socket and lock, witness (one spare)
_keep: list[ctypes.Array[ctypes.c_char]] = []  # the new argv/environ areas must outlive us


class _MmMap(ctypes.Structure):  # struct prctl_mm_map (linux/prctl.h)
    _fields_ = (
        ("start_code", ctypes.c_uint64), ("end_code", ctypes.c_uint64), ("start_data", ctypes.c_uint64),
        ("end_data", ctypes.c_uint64), ("start_brk", ctypes.c_uint64), ("brk", ctypes.c_uint64),
        ("start_stack", ctypes.c_uint64), ("arg_start", ctypes.c_uint64), ("arg_end", ctypes.c_uint64),
        ("env_start", ctypes.c_uint64), ("env_end", ctypes.c_uint64), ("auxv", ctypes.c_void_p),
        ("auxv_size", ctypes.c_uint32), ("exe_fd", ctypes.c_uint32))


def _area(items: Sequence[str]) -> tuple[int, int]:
    data = b"".join(i.encode("utf-8", "surrogateescape") + b"\0" for i in items)
    buf = ctypes.create_string_buffer(data, len(data))
    _keep.append(buf)
    return ctypes.addressof(buf), ctypes.addressof(buf) + len(data)


def set_process_identity(argv: Sequence[str], env: dict[str, str]) -> bool:
    """Make /proc/self/cmdline and /proc/self/environ show ``argv``/``env``; False if refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.sbrk.restype = ctypes.c_void_p
        with open("/proc/self/stat") as f:
            v = [0, 0, 0, 0, *(int(x) for x in f.read().rsplit(")", 1)[1].split()[1:])]  # v[n]: field n, proc(5)
        m = _MmMap(start_code=v[26], end_code=v[27], start_stack=v[28], start_data=v[45], end_data=v[46],
                   start_brk=v[47], brk=libc.sbrk(0) or v[47], auxv=None, auxv_size=0, exe_fd=0xFFFFFFFF)
        m.arg_start, m.arg_end = _area(argv)
        m.env_start, m.env_end = _area([f"{k}={val}" for k, val in env.items()])
        return int(libc.prctl(PR_SET_MM, PR_SET_MM_MAP, ctypes.byref(m), ctypes.sizeof(m), 0)) == 0
    except (OSError, ValueError, IndexError):
        return False


def _become_server(argv: Sequence[str], env: dict[str, str], close: Sequence[int], umask: int | None) -> None:
    """In the detached grandchild: never returns."""
    code = 1
    try:
        os.setsid()
        if umask is not None:
            os.umask(umask)
        for fd in close:
            try:
                os.close(fd)
            except OSError:
                pass
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if null > 2:
            os.close(null)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.chdir("/")
        os.environ.clear()
        os.environ.update(env)
        set_process_identity(argv, env)
        from runwasm.shim.server.server_main import serve_main

        code = serve_main()
    finally:
        os._exit(code)


def _fork_detached(argv: Sequence[str], env: dict[str, str], close: Sequence[int], umask: int | None,
                   reap: bool, witness: int | None = None) -> int:
    """Double fork: the server's pid. ``reap``: wait for the intermediate (False in the
    template, whose children the kernel reaps: SIGCHLD is ignored there). ``witness``: a pipe's
    write end on which the server writes its pid first thing (``fork_server``), then closes."""
    r, w = os.pipe()
    mid = os.fork()
    if mid == 0:  # intermediate: fork the server, report its pid, exit so init adopts it
        try:
            os.close(r)
            pid = os.fork()
            if pid == 0:
                os.close(w)
                if witness is not None:
                    try:  # the child may have its pid from the template already, and closed the pipe
                        os.write(witness, str(os.getpid()).encode())
                    except OSError:
                        pass
                    finally:
                        os.close(witness)
                _become_server(argv, env, close, umask)
            os.write(w, str(pid).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 64):
        out += chunk
    os.close(r)
    if reap:
        os.waitpid(mid, 0)
    if not out:
        raise OSError("failed to fork the shim server from the template")
    return int(out)


def fork_server(argv: Sequence[str], env: dict[str, str], sock: socket.socket) -> int:
    """Fork the detached server; returns its pid. ``env`` names ``sock``'s fd, and the node
    socket and lock ``start`` claimed when it did (``FD_VARIABLES``; they stay open in the
    server: no exec, so inheritability does not matter). In a template child with a channel the
    template forks it (``serve_fork_request``), given those fds and the write end of a
    *witness* pipe, on which the server writes its pid first thing. When the template gives no
    pid (it died, answered an error, or reset the channel) the witness says what happened: a
    pid (the server runs: the template died between its fork and its reply), or end of file
    with nothing written (no server was forked: every copy of the write end is closed), and
    then the child forks the server itself, as without a template. Raises OSError only when
    the template neither answers nor lets go of the witness within ``FORK_REPLY_TIMEOUT`` (it
    may still fork a server: forking another here could leave two serving one socket)."""
    from runwasm.shim.template.key import ENV_FORKED_BY

    env = {**env, ENV_FORKED_BY: str(os.getppid())}  # we are the template's child: its pid
    if template_channel is not None:
        fds: list[int] = []
        fd_vars: dict[str, list[int]] = {}  # variable -> indexes into fds
        for name in _fd_variables():
            if env.get(name):
                numbers = [int(n) for n in env[name].split(",")]
                fd_vars[name] = list(range(len(fds), len(fds) + len(numbers)))
                fds += numbers
        witness_r, witness_w = os.pipe2(os.O_CLOEXEC)
        req = json.dumps({"argv": list(argv), "env": {k: v for k, v in env.items() if k not in fd_vars},
                          "fd_vars": fd_vars, "umask": _current_umask(), "witness": len(fds)}).encode()
        try:
            try:
                socket.send_fds(template_channel, [req], [*fds, witness_w])
            except OSError:
                pass  # the template is gone (or the request too big): fork here, as before
            else:
                os.close(witness_w)
                witness_w = -1
                pid = _template_forked(template_channel, witness_r)
                if pid is not None:
                    return pid
        finally:
            os.close(witness_r)
            if witness_w >= 0:
                os.close(witness_w)
    return _fork_detached(argv, env, inherited_to_close, None, reap=True)


def _template_forked(channel: socket.socket, witness: int) -> int | None:
    """The pid of the server the template forked for our request, None when it forked none
    (``fork_server``); OSError when that cannot be known in time."""
    import select

    deadline = time.monotonic() + FORK_REPLY_TIMEOUT
    channel.settimeout(FORK_REPLY_TIMEOUT)
    try:
        reply = channel.recv(256).decode(errors="replace")
    except TimeoutError:
        reply = None
    except OSError as err:  # reset: the template died
        reply = f"the channel failed: {err}"
    if reply is not None and reply.startswith("pid "):
        return int(reply[4:])
    # no pid: did a server start anyway? Its pid on the witness, or EOF once nobody can write
    wait = max(0.0, deadline - time.monotonic()) if reply is not None else 0.0
    data = b""
    if select.select([witness], [], [], wait)[0]:
        while chunk := os.read(witness, 32):
            data += chunk
        if not data:
            return None  # end of file: nothing was forked; the caller forks the server itself
        return int(data)
    why = "no answer" if reply is None else (reply or "no reply")
    raise OSError(f"the template could not fork the shim server ({why}) and may still: not forking another")


def _fd_variables() -> tuple[str, ...]:
    """Environment variables of a server that name fds it inherits (comma-separated)."""
    from runwasm.shim.common.node_handoff import ENV_NODE_CLAIMED
    from runwasm.shim.entry.start import ENV_LISTEN_FD

    return (ENV_LISTEN_FD, ENV_NODE_CLAIMED)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def serve_fork_request(channel: socket.socket, close: Sequence[int]) -> bool:
    """In the template: answer one ``fork_server`` request of a child on ``channel`` (``pid N``
    or ``error TEXT``); False at EOF (the child is done). The server gets the child's argv,
    environment, umask, listening socket and claimed node socket and lock (``fd_vars``: the
    variables naming them, renumbered to their fds here); ``close``: the template's own fds it
    must not keep (listener, lock, other channels)."""
    from runwasm.shim.entry.start import ENV_LISTEN_FD

    try:
        msg, fds, _flags, _addr = socket.recv_fds(channel, _MAX_FORK_REQUEST, _MAX_FORK_FDS)
    except OSError:
        return False
    if not msg:
        for fd in fds:
            os.close(fd)
        return False
    try:
        req = json.loads(msg)
        env = {str(k): str(v) for k, v in dict(req["env"]).items()}
        fd_vars = {str(k): [int(i) for i in v] for k, v in dict(req.get("fd_vars", {})).items()}
        if ENV_LISTEN_FD not in fd_vars:
            raise ValueError("no listening socket named")
        wanted = sorted(i for idx in fd_vars.values() for i in idx)
        named = len(fds) - (req.get("witness") is not None)
        if wanted != list(range(named)) or set(fd_vars) - set(_fd_variables()):
            raise ValueError(f"the request names fds {fd_vars} but {len(fds)} arrived")
        for name, idx in fd_vars.items():
            env[name] = ",".join(str(fds[i]) for i in idx)
        witness = req.get("witness")
        if witness is not None and (not isinstance(witness, int) or witness in wanted or not 0 <= witness < len(fds)):
            raise ValueError(f"the request's witness {witness!r} is not one of its other fds")
        pid = _fork_detached([str(a) for a in req["argv"]], env, [*close, channel.fileno()], int(req["umask"]),
                             reap=False, witness=None if witness is None else fds[witness])
        reply = f"pid {pid}"
    except (ValueError, KeyError, TypeError, OSError) as err:
        reply = f"error {err}"
    finally:
        for fd in fds:
            os.close(fd)
    try:
        channel.send(reply.encode())
    except OSError:
        return False
    return True
