"""The Linux executor as a Task-service back-end: an adapter over ``runwasm.linux.executor``.

The bundle directory doubles as the executor's state directory, so ``delete`` can rebuild it
with ``LinuxContainer.load(bundle)`` and release cgroups after a SIGKILLed server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runwasm.linux.executor import LinuxContainer, LinuxLaunch
from runwasm.oci.runtime_spec import Process, RuntimeSpec
from runwasm.shim.server.backends import Launch


def _launch(ll: LinuxLaunch, process: Process | None) -> Launch:
    # the workload opens a pty exactly when the process asks for a terminal (runwasm.linux.terminal)
    return Launch(entry=ll.entry, payload=ll.payload, pidns=ll.pidns, pty=bool(process and process.terminal))


@dataclass
class LinuxBackend:
    container_id: str
    spec: RuntimeSpec
    bundle: Path
    rootfs: Path
    c: LinuxContainer
    kind: str = "linux"
    _init_attached: bool = False

    @classmethod
    def create(cls, cid: str, namespace: str, spec: RuntimeSpec, bundle: Path, rootfs: Path) -> LinuxBackend:
        return cls(cid, spec, bundle, rootfs, LinuxContainer(bundle, namespace=namespace))

    def plan_init(self) -> Launch:
        return _launch(self.c.prepare(self.container_id, self.bundle, self.spec, self.rootfs), self.spec.process)

    def attach(self, pid: int) -> None:
        self.c.attach(pid, init=not self._init_attached)
        self._init_attached = True

    def started(self) -> None:
        self.c.run_poststart()

    def plan_exec(self, exec_id: str, process: Process, init_pid: int) -> Launch:
        return _launch(self.c.prepare_exec(exec_id, process), process)

    def pids(self, known: list[int]) -> list[int]:
        return self.c.pids()

    def kill_all(self, sig: int, known: list[int]) -> None:
        self.c.kill_all(sig)

    def pause(self) -> None:
        self.c.pause()

    def resume(self) -> None:
        self.c.resume()

    def update(self, resources: bytes) -> None:
        self.c.update(resources)

    def stats(self) -> tuple[str, bytes]:
        from runwasm.shim.server.metrics import encode_metrics

        return encode_metrics(self.c.stats())

    def oom_watcher(self) -> Any:
        return self.c.oom_watcher()

    def destroy(self) -> None:
        self.c.destroy()
