"""Executor back-ends as the Task service sees them: what to spawn, and container-wide operations.

A back-end is made per container, after the router chose its kind. ``plan_init`` says which
workload entry point the zygote runs and with what payload; the container-wide operations
(pids, kill all, pause, update, stats, exec) are delegated to it. Operations a back-end cannot
do raise UnimplementedError (never on the Create path).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from runwasm.oci.runtime_spec import Process, RuntimeSpec, process_to_json
from runwasm.oci.spec_sched import memory_policy_to_json
from runwasm.shim.common.errors import InvalidArgumentError, UnimplementedError

if TYPE_CHECKING:
    from runwasm.linux.task_cgroup import CgroupSandbox, TaskCgroup
    from runwasm.shim.server.image_module import ImageModule
    from runwasm.wasm.sandbox import Sandbox as WasmSandbox


@dataclass(frozen=True, slots=True)
class Launch:
    """What the zygote is asked to spawn for a task: entry point, payload, pid namespace, fds."""

    entry: str
    payload: dict[str, Any]
    pidns: str | None = None
    extra_fds: dict[str, int] = field(default_factory=dict)
    pty: bool = False  # the workload makes a pty and sends its master with ``ready``; the server
    #                    then copies the stdio FIFOs itself instead of handing them over


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


def refuse_linux_only(container_id: str, spec: RuntimeSpec) -> None:
    """Refuse (InvalidArgument, at Create) the spec fields a Wasm task cannot honour, rather than
    run the guest without them: a Wasm guest runs in the shim server's namespaces (a sysctl would
    change the shim's, not the container's), has no /dev, and no network namespace of its own.
    Everything else a Wasm task honours: rlimits, scheduler, ioPriority, memoryPolicy,
    oomScoreAdj, user, capabilities, seccomp (``spawn/wasm_workload.py``), env, directory bind
    mounts as preopens (``preopens.py``), linux.resources (its cgroup)."""
    lin = spec.linux
    if lin is None:
        return
    why = {"linux.sysctl": "a Wasm task runs in the shim's namespaces and has no /proc/sys of its own, "
                           "so the values would change the shim's kernel parameters",
           "linux.devices": "a Wasm guest has no /dev to create device nodes in; bind-mount a directory "
                            "holding the device instead",
           "linux.netDevices": "a Wasm task has no network namespace of its own to move the interface into"}
    for field_name, value in (("linux.sysctl", sorted(lin.sysctl.items())),
                              ("linux.devices", [d.path for d in lin.devices]),
                              ("linux.netDevices", [d.host_name for d in lin.net_devices])):
        if value:
            raise InvalidArgumentError(f"Wasm container {container_id!r}: {field_name} {value!r} cannot be "
                                       f"honoured: {why[field_name]}")


@dataclass
class WasmBackend:
    """Wasm tasks: one workload process each, isolated in a cgroup of its own.

    The cgroup is ``linux.cgroupsPath`` or ``/runwasm/<namespace>/<id>``, made by ``plan_init``
    with ``linux.resources`` applied (``runwasm.linux.task_cgroup.CgroupSandbox``); the
    workload joins it itself before it reports ``ready`` (``cgroup_procs`` in its payload). Its record lives in ``<bundle>/wasm-state.json``
    (``bundle`` defaults to the rootfs' parent) so ``delete`` can remove it after a SIGKILLed
    server with ``runwasm.linux.task_cgroup.destroy_recorded(bundle)``. Without any cgroup
    support on the host (``cgroups=False``) the task runs unconfined, as before.
    """

    container_id: str
    spec: RuntimeSpec
    rootfs: Path
    cache_dir: str | None = None
    namespace: str = "default"
    bundle: Path | None = None
    cgroups: bool = True
    rootfs_readonly: bool = False  # runtime options WasmRootfsReadonly: on top of root.readonly
    image_module: ImageModule | None = None  # the image's Wasm layer runs instead of args[0]'s path
    wasm_sandbox: WasmSandbox | None = None  # runtime options' Wasm* keys (annotations applied in plan_init)
    kind: str = "wasm"
    sandbox: CgroupSandbox | None = None  # made by plan_init
    rootfs_view: Path | None = None  # where the server reads the rootfs when it is in a private mount ns

    def plan_init(self) -> Launch:
        proc = self.spec.process
        assert proc is not None  # the router checked
        refuse_linux_only(self.container_id, self.spec)
        launch = self._launch(proc, self.image_module)
        if self.cgroups and self.sandbox is None:
            from runwasm.linux.task_cgroup import CgroupSandbox

            state_dir = self.bundle if self.bundle is not None else self.rootfs.parent
            self.sandbox = CgroupSandbox.create(state_dir, self.container_id, self.namespace, self.spec.linux)
        return self._joining(launch)

    def _joining(self, launch: Launch) -> Launch:
        """``launch`` with the cgroup's ``cgroup.procs`` files in its payload: the workload joins
        its cgroup itself, first thing (``shim/spawn/wasm_workload.py``), before it reports
        ``ready``, so no user code runs outside it and the server's loop does not pay for one
        cgroup migration per hierarchy (each waits for the kernel's threadgroup lock)."""
        if self.sandbox is None:
            return launch
        return replace(launch, payload={**launch.payload, "cgroup_procs": self.sandbox.cg.cgroup.procs_files()})

    def _launch(self, proc: Process, image_module: ImageModule | None) -> Launch:
        """The Wasm workload for ``proc`` (the init's or an exec's process) in this container:
        its rootfs, bind-mount preopens, sandbox options and seccomp filter, ``proc``'s args, env,
        cwd and credentials."""
        from runwasm.shim.server.preopens import wasm_preopens
        from runwasm.wasm.payload import WasmTaskPayload
        from runwasm.wasm.sandbox import Preopen, Sandbox, with_annotations

        # bind mounts of directories become preopens; ro/rro make them read-only (sandbox
        # preopens carry the mode), options a preopen cannot enforce are refused (shim/server/preopens.py)
        binds = wasm_preopens(self.container_id, self.spec.mounts)
        preopens = tuple((host, guest) for host, guest, read_only in binds if not read_only)
        sandbox = with_annotations(self.wasm_sandbox or Sandbox(), self.spec.annotations)
        ro_binds = tuple(Preopen(host, guest, readonly=True) for host, guest, read_only in binds if read_only)
        if ro_binds:
            sandbox = replace(sandbox, preopens=ro_binds + sandbox.preopens)
        payload = WasmTaskPayload(
            rootfs=str(self.rootfs),
            args=proc.args or ((image_module.path.name,) if image_module else ()),
            env=proc.env, cwd=proc.cwd, preopens=preopens,
            cache_dir=self.cache_dir,
            module_file=str(image_module.path) if image_module else None,
            module_name=image_module.where if image_module else None,
            precompiled_file=str(image_module.compiled.path) if image_module and image_module.compiled else None,
            sandbox=sandbox.to_json(),
            rootfs_readonly=self.rootfs_readonly or bool(self.spec.root and self.spec.root.readonly))
        lin = self.spec.linux
        seccomp = lin.seccomp if lin is not None else None
        mpol = lin.memory_policy if lin is not None else None
        netns = lin.namespace("network") if lin is not None else None
        return Launch(entry="runwasm.shim.spawn.wasm_workload:main",
                      payload={"task": payload.to_json(), "process": process_to_json(proc),
                               "seccomp": dict(seccomp) if seccomp is not None else None,
                               "memoryPolicy": memory_policy_to_json(mpol) if mpol is not None else None,
                               "network": netns.path if netns is not None else None})

    def _tc(self, what: str) -> TaskCgroup:
        if self.sandbox is None:
            raise UnimplementedError(f"{what} of Wasm container {self.container_id!r} needs its cgroup, "
                                     "and it has none")
        return self.sandbox.cg

    def attach(self, pid: int) -> None:
        """Nothing to do: the workload joined its cgroup itself (``_joining``) before ``ready``."""
        return None

    def started(self) -> None:
        return None

    def oom_watcher(self) -> Any:
        return None if self.sandbox is None else self.sandbox.cg.oom_watcher()

    def plan_exec(self, exec_id: str, process: Process, init_pid: int) -> Launch:
        """An exec into a Wasm container is a new Wasm workload: ``process.args[0]`` names a module
        (or ``PATH#export``) in the container's rootfs, run with the container's preopens, sandbox
        and seccomp filter and the exec's own env, cwd and credentials; the Task service moves it
        into the container's cgroup (``attach``) before it runs. The image's Wasm layer (runwasi
        and CNCF artifact images, whose module is not in the rootfs) runs when ``args[0]`` names no
        file of the rootfs."""
        from runwasm.shim.common.errors import InvalidArgumentError

        if not process.args or not process.args[0]:
            raise InvalidArgumentError(
                f"failed to exec {exec_id!r} in Wasm container {self.container_id!r}: process.args is empty; "
                "it must name a Wasm module in the container's rootfs (PATH or PATH#export)")
        layer = None
        if self.image_module is not None:
            path = process.args[0].partition("#")[0]
            if not path or not ((self.rootfs_view or self.rootfs) / path.lstrip("/")).exists():
                layer = self.image_module
        return self._joining(self._launch(process, layer))

    def pids(self, known: list[int]) -> list[int]:
        if self.sandbox is None:
            return list(known)
        return self.sandbox.cg.pids()

    def kill_all(self, sig: int, known: list[int]) -> None:
        if self.sandbox is not None:
            self.sandbox.cg.kill_all(sig)
            return
        for pid in known:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def pause(self) -> None:
        self._tc("pause").pause()

    def resume(self) -> None:
        self._tc("resume").resume()

    def update(self, resources: bytes) -> None:
        self._tc("update").update(resources)

    def stats(self) -> tuple[str, bytes]:
        from runwasm.shim.server.metrics import encode_metrics

        return encode_metrics(self._tc("stats").stats())

    def destroy(self) -> None:
        if self.sandbox is not None:
            self.sandbox.destroy()
            self.sandbox = None
