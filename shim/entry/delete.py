"""The ``delete`` action: clean up whatever a container left and print a DeleteResponse.

containerd runs it after every task teardown (the server is usually gone or idle) and after a
server crash. It must be idempotent and fast (5 s budget including interpreter start): kill
the recorded workload if it is still the same process, unmount ``<bundle>/rootfs`` and any
recorded mounts, release the Linux executor's cgroups, remove the group's socket if its server
is gone (it was SIGKILLed: a server that exits normally removes it itself), then write
``DeleteResponse{pid, exit_status=137, exited_at=now}`` (upstream's values) to stdout.

The socket (named in ``<bundle>/address``) is shared by every container of the group, so it is
removed only when it is stale: nothing accepts a connection on it, and no socket of this network
namespace is bound to its path (``/proc/net/unix``), which rules out a ``start`` that has bound
it and not yet listened. A ``start`` that finds a stale socket removes it the same way and binds
anew, so a socket this removes is never one a server is using.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import socket
import stat
import time
from pathlib import Path

from runwasm.shim.common import wire
from runwasm.shim.common.statefile import DEAD_STATUS, BundleState, process_start_time
from runwasm.shim.entry.flags import Flags

log = logging.getLogger(__name__)
MNT_DETACH = 2
# record files of runwasm.linux.executor (STATE_FILE) and runwasm.linux.task_cgroup (WASM_STATE_FILE),
# named here so the common path imports neither (tests/shim/entry/test_start_delete.py checks they agree)
LINUX_RECORD = "linux-state.json"
WASM_RECORD = "wasm-state.json"
SANDBOX_CONTAINERS = "containers"


def _umount(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    while True:  # stacked mounts: peel until nothing is mounted there
        if libc.umount2(path.encode(), MNT_DETACH) == 0:
            continue
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            log.warning("failed to unmount %r: %s", path, os.strerror(err))
        return


def _bound_unix_paths() -> set[str]:
    """Paths of the Unix sockets bound in this network namespace (listening or not)."""
    paths = set()
    with open("/proc/net/unix", "rb") as f:
        next(f, None)  # header
        for line in f:
            fields = line.split(maxsplit=7)
            if len(fields) == 8:
                paths.add(os.fsdecode(fields[7].rstrip(b"\n")))
    return paths


def remove_stale_socket(bundle: Path) -> bool:
    """Remove the group socket named in ``<bundle>/address`` if no server owns it any more;
    True when it was removed. Errors are logged, never raised (delete must finish)."""
    try:
        address = (bundle / "address").read_text().strip()
    except OSError:
        return False
    path = address.removeprefix("unix://")
    if path == address or not path.startswith("/"):
        return False
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            return False  # a server is alive there (another container of the group, or a new one)
        except ConnectionRefusedError:
            pass
        finally:
            probe.close()
        if path in _bound_unix_paths():
            return False  # bound by a `start` that is about to listen
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as err:
        log.warning("failed to check or remove the shim socket %r: %s", path, err)
        return False
    log.info("removed the stale shim socket %r (its server is gone)", path)
    return True


def _cleanup_sandbox(bundle: Path) -> None:
    """A Sandbox API bundle (no runwasm.json): containerd runs ``delete`` only here after the
    pod's server died, so clean the pod's containers from the copies of their records the server
    kept (shim/server/sandbox.py), then the namespace holder's cgroup (killing the holder)."""
    containers = bundle / SANDBOX_CONTAINERS
    if containers.is_dir():
        for copy in sorted(containers.iterdir()):
            if copy.is_dir():
                log.info("cleaning container %s of the dead sandbox server", copy.name)
                cleanup_bundle(copy)
    if (bundle / WASM_RECORD).exists():
        from runwasm.linux.task_cgroup import destroy_recorded as destroy_wasm_cgroup

        destroy_wasm_cgroup(bundle)


def cleanup_bundle(bundle: Path) -> tuple[int, int]:
    """Best-effort cleanup; returns (pid, exit_status) for the DeleteResponse."""
    state = BundleState.load(bundle)
    pid, status = 0, DEAD_STATUS
    if state is not None:
        pid = state.pid
        if state.exit_status is not None:
            status = state.exit_status
        if pid and state.pid_start_time and process_start_time(pid) == state.pid_start_time:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for mnt in reversed(state.mounts):
            _umount(mnt)
        # the executors' records exist only while something is left to release: after a normal
        # teardown they are gone, and delete need not pay for importing the cleanup code
        if state.kind == "linux" and (bundle / LINUX_RECORD).exists():
            from runwasm.shim.entry.linux_cleanup import destroy_recorded

            destroy_recorded(bundle, state)
        elif state.kind == "wasm" and (bundle / WASM_RECORD).exists():
            from runwasm.linux.task_cgroup import destroy_recorded as destroy_wasm_cgroup

            destroy_wasm_cgroup(bundle)  # logs its errors, never raises
        # a private EROFS rootfs' dm-verity devices, busy until the container's last process is gone
        if state.verity:
            from runwasm.shim.server.private_rootfs import close_verity

            close_verity(state.verity)
    else:
        _cleanup_sandbox(bundle)
    _umount(str(bundle / "rootfs"))
    remove_stale_socket(bundle)
    return pid, status


def run(flags: Flags) -> bytes:
    bundle = Path(flags.bundle or os.getcwd())
    pid, status = cleanup_bundle(bundle)
    now = time.time_ns()
    return (wire.enc_int(1, pid) + wire.enc_int(2, status)
            + wire.enc_timestamp(3, now // 1_000_000_000, now % 1_000_000_000))
