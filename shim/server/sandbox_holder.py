"""Launch the pod's namespace holder (``runwasm.shim.spawn.pod_holder``) through the zygote.

The server moves the holder into its cgroup and sends ``go`` on a SOCK_SEQPACKET pair; the
holder sets itself up and reports ``ok`` or ``error <text>`` on it once it is in the pod's
namespaces; only then is its pid given to containerd (CRI opens ``/proc/<pid>/ns/*`` right
away). Its exit is matched by (pid, start time) through the server's reaper like any workload.
It lives in the cgroup ``HolderSpec.cgroup_path`` (``<cgroup_parent>/<sandbox id>``, where CRI
would have put the pause container), recorded in the sandbox bundle (``wasm-state.json``, the
record ``delete`` already cleans after a SIGKILLed server); ``release`` removes it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

from runwasm.linux.task_cgroup import CgroupSandbox
from runwasm.oci.runtime_spec import Linux
from runwasm.shim.common.errors import InvalidArgumentError, UnavailableError
from runwasm.shim.server.reaper import Reaper
from runwasm.shim.server.sandbox import ExitCallback, HolderSpec
from runwasm.shim.spawn.zygote import Zygote

log = logging.getLogger(__name__)

ENTRY = "runwasm.shim.spawn.pod_holder:main"
READY_TIMEOUT = 30.0


class ZygoteHolderLauncher:
    def __init__(self, zygote: Zygote, reaper: Reaper) -> None:
        self._zygote = zygote
        self._reaper = reaper
        self._cgroups: dict[int, CgroupSandbox] = {}

    async def launch(self, spec: HolderSpec, on_exit: ExitCallback) -> int:
        cgs = CgroupSandbox.create(Path(spec.bundle), spec.sandbox_id, "", Linux(cgroups_path=spec.cgroup_path))
        try:
            pid = await self._launch(spec, on_exit, cgs)
        except BaseException:
            _destroy(cgs)
            raise
        self._cgroups[pid] = cgs
        return pid

    def release(self, pid: int) -> None:
        cgs = self._cgroups.pop(pid, None)
        if cgs is not None:
            _destroy(cgs)

    async def _launch(self, spec: HolderSpec, on_exit: ExitCallback, cgs: CgroupSandbox) -> int:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        netns_fd = -1
        try:
            fds = {"ready": theirs.fileno(), "log": 2}
            if spec.netns_path:
                try:
                    netns_fd = os.open(spec.netns_path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as err:
                    raise InvalidArgumentError(f"failed to start sandbox {spec.sandbox_id!r}: cannot open its network "
                                               f"namespace {spec.netns_path!r}: {err.strerror}") from err
                fds["netns"] = netns_fd
            payload = {"hostname": spec.hostname, "unshare_ipc": spec.unshare_ipc, "unshare_uts": spec.unshare_uts,
                       "sysctls": dict(spec.sysctls)}
            with self._reaper.spawning():
                spawned = await self._zygote.spawn(ENTRY, payload, fds, pidns="new" if spec.new_pidns else None)
            self._reaper.watch(spawned.pid, spawned.start_time, lambda _pid, status, at: on_exit(status, at))
            try:
                cgs.cg.attach(spawned.pid)
            except BaseException:
                self.signal(spawned.pid, signal.SIGKILL)
                raise
        finally:
            theirs.close()
            if netns_fd >= 0:
                os.close(netns_fd)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(ours, b"go")
            reply = await asyncio.wait_for(loop.sock_recv(ours, 4096), READY_TIMEOUT)
        except TimeoutError:
            self.signal(spawned.pid, signal.SIGKILL)
            raise UnavailableError(f"failed to start sandbox {spec.sandbox_id!r}: its namespace holder (pid "
                                   f"{spawned.pid}) did not report within {READY_TIMEOUT:.0f}s") from None
        finally:
            ours.close()
        if reply != b"ok":
            self.signal(spawned.pid, signal.SIGKILL)
            text = reply.decode(errors="replace").removeprefix("error ") or "it exited before reporting"
            raise InvalidArgumentError(f"failed to start sandbox {spec.sandbox_id!r}: namespace holder set-up "
                                       f"failed: {text}")
        return spawned.pid

    def signal(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _destroy(cgs: CgroupSandbox) -> None:
    try:
        cgs.destroy()
    except Exception as err:  # the cgroup record stays in the bundle for delete
        log.warning("failed to remove the namespace holder's cgroup %r: %s", cgs.cg.cgroup.path, err)
