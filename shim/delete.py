"""The ``delete`` action: clean up whatever a container left and print a DeleteResponse.

containerd runs it after every task teardown (the server is usually gone or idle) and after a
server crash. It must be idempotent and fast (5 s budget including interpreter start): kill
the recorded workload if it is still the same process, unmount ``<bundle>/rootfs`` and any
recorded mounts, release the Linux executor's cgroups, then write
``DeleteResponse{pid, exit_status=137, exited_at=now}`` (upstream's values) to stdout.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import time
from pathlib import Path

from runwasm.shim import wire
from runwasm.shim.flags import Flags
from runwasm.shim.statefile import BundleState, process_start_time

log = logging.getLogger(__name__)
MNT_DETACH = 2
# record files of runwasm.linux.executor (STATE_FILE) and runwasm.linux.task_cgroup (WASM_STATE_FILE),
# named here so the common path imports neither (tests/shim/test_start_delete.py checks they agree)
LINUX_RECORD = "linux-state.json"
WASM_RECORD = "wasm-state.json"


def _umount(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    while True:  # stacked mounts: peel until nothing is mounted there
        if libc.umount2(path.encode(), MNT_DETACH) == 0:
            continue
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            log.warning("failed to unmount %r: %s", path, os.strerror(err))
        return


def cleanup_bundle(bundle: Path) -> tuple[int, int]:
    """Best-effort cleanup; returns (pid, exit_status) for the DeleteResponse."""
    state = BundleState.load(bundle)
    pid, status = 0, 137
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
            from runwasm.shim.linux_cleanup import destroy_recorded

            destroy_recorded(bundle, state)
        elif state.kind == "wasm" and (bundle / WASM_RECORD).exists():
            from runwasm.linux.task_cgroup import destroy_recorded as destroy_wasm_cgroup

            destroy_wasm_cgroup(bundle)  # logs its errors, never raises
    _umount(str(bundle / "rootfs"))
    return pid, status


def run(flags: Flags) -> bytes:
    bundle = Path(flags.bundle or os.getcwd())
    pid, status = cleanup_bundle(bundle)
    now = time.time_ns()
    return (wire.enc_int(1, pid) + wire.enc_int(2, status)
            + wire.enc_timestamp(3, now // 1_000_000_000, now % 1_000_000_000))
