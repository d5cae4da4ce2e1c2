"""``process.terminal``: the workload makes the pty and hands the master to the shim.

Protocol extension (backward compatible with ``runwasm.oci.control``): the ``ready`` packet is
``{"type": "ready", "pid": N, "pty": true}`` and carries exactly one fd, the pty master, as
SCM_RIGHTS ancillary data in the same SOCK_SEQPACKET packet. Receive it with
``recv_message(sock)`` below (``socket.recv_fds``); a plain ``recv`` would silently drop the fd.
Without a terminal the packet is the usual ``ready`` with no fd and no ``pty`` key.

The pair is opened after pivot_root (/dev/ptmx is the container's devpts instance), the slave
becomes the controlling terminal of the workload (a session leader: the zygote did setsid) and
is dup2'd onto 0/1/2 right before execve.
"""

from __future__ import annotations

import json
import os
import socket

from runwasm.linux import syscalls as sc
from runwasm.linux.errors import SetupError
from runwasm.oci.control import MAX_PACKET, ControlChannelError, decode
from runwasm.oci.runtime_spec import ConsoleSize


def open_pty(size: ConsoleSize | None) -> tuple[int, int]:
    """Return (master, slave) from the current root's /dev/ptmx; slave becomes our ctty."""
    try:
        master, slave = os.openpty()
    except OSError as err:
        raise SetupError(f"failed to open a pty via /dev/ptmx (is devpts mounted at /dev/pts?): "
                         f"[errno {err.errno}] {err.strerror}") from err
    os.set_inheritable(master, False)
    try:
        if size is not None and size.height and size.width:
            sc.set_winsize(slave, size.height, size.width)
        sc.ioctl_int(slave, sc.TIOCSCTTY, 0)
    except OSError as err:
        raise SetupError(f"failed to make the pty the controlling terminal: [errno {err.errno}] {err.strerror}") from err
    return master, slave


def send_ready(control_fd: int, pty_master: int | None) -> None:
    """Send ``ready`` (with the pty master attached when there is one)."""
    msg: dict[str, object] = {"type": "ready", "pid": os.getpid()}
    with socket.socket(fileno=os.dup(control_fd)) as sock:
        try:
            if pty_master is None:
                sock.sendall(json.dumps(msg).encode())
            else:
                msg["pty"] = True
                socket.send_fds(sock, [json.dumps(msg).encode()], [pty_master])
        except OSError as err:
            raise ControlChannelError("control peer went away") from err


def recv_message(sock: socket.socket) -> tuple[dict[str, object], list[int]]:
    """Shim side: one control message and the fds attached to it (the pty master for a
    ``ready`` with ``"pty": true``). The caller owns the returned fds."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_PACKET, 4)
    try:
        return decode(data), fds
    except ControlChannelError:
        for fd in fds:
            os.close(fd)
        raise
