"""The pod's namespace holder: the process a Sandbox API pod (``sandboxer = "shim"``) has instead
of a pause container.

containerd's CRI builds every container of the pod with ``/proc/<sandbox pid>/ns/{net,ipc,uts}``
(and ``pid`` when the pod shares its process namespace), where the sandbox pid is what
``StartSandbox`` returned; so that pid must be a process living in the pod's namespaces. The
shim server spawns this one through the zygote (in a new pid namespace unless the pod uses the
node's); it

0. waits for ``go`` on the ``ready`` socket (the server has moved it into its cgroup);
1. joins the network namespace CRI made for the pod (fd ``netns``), when there is one;
2. unshares the IPC and UTS namespaces the payload asks for and sets the pod's hostname;
3. writes the pod's sysctls (``linux.sysctls``: only namespaced keys reach here, checked by
   ``runwasm.shim.server.sandbox``); /proc/sys resolves them in the caller's namespaces;
4. gives up every privilege it has no further use for: all capabilities (bounding, effective,
   permitted, inheritable, ambient) and ``no_new_privs``. It runs no pod code, so the pod's
   security context (run-as user, seccomp, privileged) has nothing to apply to; a holder without
   capabilities is at least as confined as any pause container that context could describe;
5. reports ``ok`` (or ``error <text>``) on the ``ready`` socket and waits for signals: SIGTERM
   or SIGINT end it (exit 0), SIGCHLD reaps orphans (it may be pid 1 of the pod's pid namespace).

Payload: ``{"hostname": str, "unshare_ipc": bool, "unshare_uts": bool, "sysctls": {key: value}}``.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Mapping
from typing import Any

from runwasm.linux import syscalls as sc
from runwasm.linux.errors import LinuxError


def _setup(payload: Mapping[str, Any], fds: Mapping[str, int]) -> None:
    netns = fds.get("netns")
    if netns is not None:
        sc.setns(netns, sc.CLONE_NEWNET)
        os.close(netns)
    flags = (sc.CLONE_NEWIPC if payload.get("unshare_ipc") else 0) | (
        sc.CLONE_NEWUTS if payload.get("unshare_uts") else 0)
    if flags:
        sc.unshare(flags)
    hostname = str(payload.get("hostname") or "")
    if hostname:
        sc.sethostname(hostname)
    for key, value in dict(payload.get("sysctls") or {}).items():
        path = os.path.join("/proc/sys", str(key).replace(".", "/"))
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except OSError as err:
            raise OSError(err.errno, f"failed to set sysctl {key!r} = {value!r} at {path!r}: "
                                     f"{os.strerror(err.errno or 0)}") from err


def _drop_privileges() -> None:
    from runwasm.linux import capabilities as caps
    from runwasm.oci.runtime_spec import Capabilities

    none = Capabilities((), (), (), (), ())
    caps.drop_bounding(none)
    caps.set_sets(none)
    caps.raise_ambient(none)  # clears the ambient set, raises nothing
    sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


def _reap(_sig: int, _frame: object) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(payload: Mapping[str, Any], fds: Mapping[str, int]) -> None:
    """Zygote entry (``runwasm.shim.spawn.pod_holder:main``); never returns."""
    ready = socket.socket(fileno=fds["ready"])
    if ready.recv(16) != b"go":  # the server has put us in our cgroup (or gave up: EOF)
        os._exit(1)
    try:
        _setup(payload, fds)
        _drop_privileges()
    except OSError as err:
        ready.send(f"error {err.strerror or err}".encode())
        os._exit(1)
    except LinuxError as err:  # a capability step failed (the message names it)
        ready.send(f"error {err}".encode())
        os._exit(1)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    signal.signal(signal.SIGCHLD, _reap)
    ready.send(b"ok")
    ready.close()
    while True:
        signal.pause()
