"""Executor back-ends as the Task service sees them: what to spawn, and container-wide operations.

A back-end is made per container, after the router chose its kind. ``plan_init`` says which
workload entry point the zygote runs and with what payload; the container-wide operations
(pids, kill all, pause, update, stats, exec) are delegated to it. Operations a back-end cannot
do raise UnimplementedError (never on the Create path).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runwasm.oci.runtime_spec import Process, RuntimeSpec
from runwasm.shim.errors import UnimplementedError


@dataclass(frozen=True, slots=True)
class Launch:
    entry: str
    payload: dict[str, Any]
    pidns: str | None = None
    extra_fds: dict[str, int] = field(default_factory=dict)


class Backend(Protocol):
    kind: str

    def plan_init(self) -> Launch: ...
    def attach(self, pid: int) -> None: ...
    def started(self) -> None: ...
    def oom_watcher(self) -> Any: ...
    def plan_exec(self, exec_id: str, process: Process, init_pid: int) -> Launch: ...
    def pids(self, known: list[int]) -> list[int]: ...
    def kill_all(self, sig: int, known: list[int]) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def update(self, resources: bytes) -> None: ...
    def stats(self) -> tuple[str, bytes]: ...
    def destroy(self) -> None: ...


@dataclass
class WasmBackend:
    """Wasm tasks: one workload process each, no namespaces of their own (yet)."""

    container_id: str
    spec: RuntimeSpec
    rootfs: Path
    cache_dir: str | None = None
    kind: str = "wasm"

    def plan_init(self) -> Launch:
        from runwasm.wasm.payload import WasmTaskPayload

        proc = self.spec.process
        assert proc is not None  # the router checked
        preopens = tuple((m.source, m.destination) for m in self.spec.mounts
                         if m.type in ("bind", "") and ("bind" in m.options or "rbind" in m.options)
                         and os.path.isdir(m.source))
        payload = WasmTaskPayload(
            rootfs=str(self.rootfs), args=proc.args, env=proc.env, cwd=proc.cwd, preopens=preopens,
            cache_dir=self.cache_dir, rootfs_readonly=bool(self.spec.root and self.spec.root.readonly))
        return Launch(entry="runwasm.wasm.child:main", payload=payload.to_json())

    def attach(self, pid: int) -> None:
        return None

    def started(self) -> None:
        return None

    def oom_watcher(self) -> Any:
        return None  # a Wasm task has no cgroup of its own (yet): no OOM events

    def plan_exec(self, exec_id: str, process: Process, init_pid: int) -> Launch:
        raise UnimplementedError(f"exec into Wasm container {self.container_id!r} is not supported")

    def pids(self, known: list[int]) -> list[int]:
        return list(known)

    def kill_all(self, sig: int, known: list[int]) -> None:
        for pid in known:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def pause(self) -> None:
        raise UnimplementedError(f"pause of Wasm container {self.container_id!r} is not supported")

    def resume(self) -> None:
        raise UnimplementedError(f"resume of Wasm container {self.container_id!r} is not supported")

    def update(self, resources: bytes) -> None:
        raise UnimplementedError(f"update of Wasm container {self.container_id!r} is not supported")

    def stats(self) -> tuple[str, bytes]:
        raise UnimplementedError(f"stats of Wasm container {self.container_id!r} are not supported")

    def destroy(self) -> None:
        return None
