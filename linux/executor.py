"""Parent-side API of the Linux executor: what the shim calls for one native container.

Lifecycle (shim side)::

    c = LinuxContainer(state_dir=bundle)                 # or LinuxContainer.load(state_dir)
    launch = c.prepare(cid, bundle, spec, rootfs)        # cgroup created, limits applied, state saved
    pid, _start_time = await zygote.spawn(launch.entry, launch.payload, fds, launch.pidns)
    c.attach(pid)                                        # record init pid (+ join cgroup if needed)
    ... control: ready (maybe with pty fd, see terminal.recv_message) ... start
    c.run_poststart()
    xl = c.prepare_exec(exec_id, process)                # Exec; spawn it the same way
    c.pids() / c.kill_all(sig) / c.stats() / c.update(resources_json) / c.pause() / c.resume()
    w = c.oom_watcher()                                  # fd for loop.add_reader (oom.py)
    c.sample_cpu()                                       # from a periodic timer (>= 1 s apart kept)
    c.cpu_nanocores()                                    # CRI usage_nano_cores; None before 2 samples
    c.destroy()                                          # idempotent; also from LinuxContainer.load()

State: ``<state_dir>/linux-state.json`` records the cgroup directories prepare() created, the
rootfs, whether the container had its own mount namespace, the init pid and the spec's
poststop hooks, so ``LinuxContainer.load(state_dir).destroy()`` cleans up after a SIGKILLed
shim. Processes left in the cgroup are SIGKILLed by destroy().

The cgroup operations themselves live in ``task_cgroup.TaskCgroup``, shared with Wasm tasks.
Out of scope: cgroup v2 device rules (``linux.resources.devices`` needs an eBPF program on v2;
they are logged and ignored there; v1 applies them through ``devices.allow/deny``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runwasm.linux import hooks, syscalls
from runwasm.linux.cgroups import Cgroup, detect
from runwasm.linux.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, SetupError
from runwasm.linux.oom import OomWatcher
from runwasm.linux.payload import ExecPayload, InitPayload
from runwasm.linux.resources import parse_resources
from runwasm.linux.stats import Metrics
from runwasm.linux.task_cgroup import TaskCgroup, cgroup_from_dict, cgroup_to_dict, default_cgroup_path
from runwasm.oci.runtime_spec import Hook, Hooks, Process, RuntimeSpec, spec_to_json
from runwasm.oci.spec_reader import SpecReader
from runwasm.oci.spec_sched import MemoryPolicy, memory_policy_to_json, parse_memory_policy

log = logging.getLogger(__name__)

INIT_ENTRY = "runwasm.linux.init:main"
EXEC_ENTRY = "runwasm.linux.enter:main"
STATE_FILE = "linux-state.json"


@dataclass(frozen=True, slots=True)
class LinuxLaunch:
    """What to hand the zygote: ``zygote.spawn(entry, payload, fds, pidns)``."""

    entry: str
    payload: dict[str, Any]
    pidns: str | None  # None, "new" or "/proc/<pid>/ns/pid"


class LinuxContainer:
    """One native container's host-side resources (cgroup, state record, hooks)."""

    def __init__(self, state_dir: Path, *, namespace: str = "default", cgroup_root: Path = Path("/sys/fs/cgroup")) -> None:
        self.state_dir = state_dir
        self.namespace = namespace
        self.cgroup_root = cgroup_root
        self.container_id = ""
        self.bundle = ""
        self.rootfs = ""
        self.cgroup: Cgroup | None = None
        self._task_cg: TaskCgroup | None = None
        self.init_pid = 0
        self.namespaces: tuple[str, ...] = ()
        self.has_mount_ns = True
        self.seccomp: Mapping[str, Any] | None = None
        self.memory_policy: MemoryPolicy | None = None
        self.poststart: tuple[Hook, ...] = ()
        self.poststop: tuple[Hook, ...] = ()
        self.annotations: dict[str, str] = {}

    # --- create ---------------------------------------------------------------------------------

    def prepare(self, container_id: str, bundle: Path, spec: RuntimeSpec, rootfs: Path) -> LinuxLaunch:
        """Create and configure the cgroup, save state, and return the init launch.

        Raises InvalidArgumentError (bad cgroupsPath/resources/spec), AlreadyExistsError (cgroup
        in use), UnavailableError (missing controller), SetupError (cgroupfs write failed)."""
        if spec.process is None or not spec.process.args:
            raise InvalidArgumentError(f"failed to prepare container {container_id!r}: process.args is empty")
        lin = spec.linux
        self.container_id, self.bundle, self.rootfs = container_id, str(bundle), str(rootfs.resolve())
        self.namespaces = tuple(ns.type for ns in (lin.namespaces if lin else ()))
        self.has_mount_ns = "mount" in self.namespaces
        self.seccomp = lin.seccomp if lin else None
        self.memory_policy = lin.memory_policy if lin else None
        self.poststart, self.poststop = spec.hooks.poststart, spec.hooks.poststop
        self.annotations = dict(spec.annotations)
        path = default_cgroup_path(self.namespace, container_id, lin)
        resources = parse_resources(lin.resources if lin else None)
        self.cgroup = detect(path, self.cgroup_root)
        self.cgroup.create()
        self._save()
        try:
            self.cgroup.apply(resources)
        except Exception:
            self.destroy()
            raise
        new_user = any(ns.type == "user" and not ns.path for ns in (lin.namespaces if lin else ()))
        pid_ns = lin.namespace("pid") if lin else None
        # a new pid namespace made by the zygote is owned by the host user namespace, which
        # would forbid mounting /proc inside a new user namespace: init makes it itself then
        by_zygote = not new_user
        if pid_ns is None:
            pidns: str | None = None
        elif pid_ns.path:
            pidns = pid_ns.path
        else:
            pidns = "new" if by_zygote else None
        dirs = {k: str(v) for k, v in self.cgroup.dirs().items()}
        payload = InitPayload(container_id=container_id, bundle=str(bundle), rootfs=self.rootfs, spec=spec,
                              cgroup_procs=tuple(self.cgroup.procs_files()), cgroup_dirs=dirs,
                              pid_ns_by_zygote=by_zygote)
        return LinuxLaunch(INIT_ENTRY, payload.to_dict(), pidns)

    def attach(self, pid: int, *, init: bool = True) -> None:
        """Record ``pid`` as the init (``init=True``) and make sure it is in the cgroup."""
        if init:
            self.init_pid = pid
            self._save()
        self._tc().attach(pid)

    def run_poststart(self) -> None:
        """Run the spec's poststart hooks (after Start); failures are logged only."""
        hooks.run_logged("poststart", self.poststart, self._state_json("running"))

    def prepare_exec(self, exec_id: str, process: Process) -> LinuxLaunch:
        """The launch for an exec into the running init (FailedPreconditionError if it is gone)."""
        if not self.init_pid or not os.path.exists(f"/proc/{self.init_pid}"):
            raise FailedPreconditionError(f"failed to exec {exec_id!r} in container {self.container_id!r}: "
                                          "the init process is not running")
        if not process.args:
            raise InvalidArgumentError(f"failed to exec {exec_id!r}: process.args is empty")
        payload = ExecPayload(container_id=self.container_id, exec_id=exec_id, init_pid=self.init_pid,
                              namespaces=self.namespaces, process=process,
                              cgroup_procs=tuple(self._cg().procs_files()), seccomp=self.seccomp,
                              memory_policy=self.memory_policy)
        pidns = f"/proc/{self.init_pid}/ns/pid" if "pid" in self.namespaces else None
        return LinuxLaunch(EXEC_ENTRY, payload.to_dict(), pidns)

    # --- running --------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Host pids of every process in the container's cgroup."""
        return self._cg().pids()

    def kill_all(self, sig: int) -> int:
        """Signal every process in the cgroup (frozen around SIGKILL so none forks away);
        returns how many were signalled."""
        return self._tc().kill_all(sig)

    def stats(self) -> Metrics:
        return self._tc().stats()

    def sample_cpu(self) -> None:
        """Take a CPU usage sample if the last one is >= 1 s old (cheap: one file read); meant
        for a periodic timer, see ``runwasm.linux.task_cgroup``."""
        self._tc().sample_cpu()

    def cpu_nanocores(self) -> int | None:
        """CPU usage in nanocores between the last two samples >= 1 s apart (None before)."""
        return self._tc().cpu_nanocores()

    def update(self, resources_json: bytes | str | Mapping[str, Any]) -> None:
        """Apply an OCI LinuxResources document (Update RPC)."""
        self._tc().update(resources_json)

    def pause(self) -> None:
        self._tc().pause()

    def resume(self) -> None:
        self._tc().resume()

    def oom_watcher(self) -> OomWatcher:
        return self._tc().oom_watcher()

    # --- delete ---------------------------------------------------------------------------------

    def destroy(self) -> None:
        """Kill what is left, remove the cgroups prepare() created, unmount what init mounted
        on the host (only without a mount namespace), run poststop hooks, drop the state file.
        Idempotent; errors are logged and the rest still runs; raises SetupError at the end if
        some cgroup directory could not be removed."""
        state_path = self.state_dir / STATE_FILE
        if self.cgroup is None and not state_path.exists():
            return
        leftover: list[str] = []
        if self.cgroup is not None:
            leftover = self._tc().destroy()
        if not self.has_mount_ns and self.rootfs:
            _unmount_under(self.rootfs)
        if state_path.exists():
            hooks.run_logged("poststop", self.poststop, self._state_json("stopped"))
        if leftover:
            self._save()
            raise SetupError(f"failed to remove cgroups of container {self.container_id!r}: {leftover}")
        try:
            state_path.unlink()
        except FileNotFoundError:
            pass
        self.cgroup = None

    @classmethod
    def load(cls, state_dir: Path) -> LinuxContainer:
        """Rebuild from ``<state_dir>/linux-state.json`` (NotFoundError when absent)."""
        try:
            d = json.loads((state_dir / STATE_FILE).read_text())
        except FileNotFoundError:
            raise NotFoundError(f"failed to load linux state in {str(state_dir)!r}: no {STATE_FILE}") from None
        c = cls(state_dir, namespace=d["namespace"])
        c.container_id, c.bundle, c.rootfs = d["container_id"], d["bundle"], d["rootfs"]
        c.init_pid, c.namespaces, c.has_mount_ns = d["init_pid"], tuple(d["namespaces"]), d["has_mount_ns"]
        c.seccomp, c.annotations = d.get("seccomp"), d.get("annotations", {})
        c.memory_policy = parse_memory_policy(SpecReader(repr(str(state_dir / STATE_FILE)), "linux state"),
                                              d.get("memoryPolicy"), "memoryPolicy")
        hooks_doc = RuntimeSpec.from_json({"ociVersion": "", "hooks": d.get("hooks") or {}}).hooks
        c.poststart, c.poststop = hooks_doc.poststart, hooks_doc.poststop
        c.cgroup = cgroup_from_dict(d["cgroup"])
        return c

    # --- internals ------------------------------------------------------------------------------

    def _cg(self) -> Cgroup:
        if self.cgroup is None:
            raise FailedPreconditionError(f"failed to use container {self.container_id!r}: not prepared or destroyed")
        return self.cgroup

    def _tc(self) -> TaskCgroup:
        cg = self._cg()
        if self._task_cg is None or self._task_cg.cgroup is not cg:
            self._task_cg = TaskCgroup(cg)
        return self._task_cg

    def _state_json(self, status: str) -> bytes:
        return hooks.state_json(self.container_id, status, self.init_pid, self.bundle, self.annotations)

    def _save(self) -> None:
        cgd = cgroup_to_dict(self._cg())
        spec_hooks = spec_to_json(RuntimeSpec(oci_version="", process=None, root=None,
                                              hooks=Hooks(poststart=self.poststart, poststop=self.poststop))).get("hooks", {})
        doc = {"container_id": self.container_id, "namespace": self.namespace, "bundle": self.bundle,
               "rootfs": self.rootfs, "init_pid": self.init_pid, "namespaces": list(self.namespaces),
               "has_mount_ns": self.has_mount_ns, "seccomp": dict(self.seccomp) if self.seccomp is not None else None,
               "annotations": self.annotations, "hooks": spec_hooks, "cgroup": cgd,
               "memoryPolicy": memory_policy_to_json(self.memory_policy) if self.memory_policy else None}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.state_dir / STATE_FILE)


def _unmount_under(rootfs: str) -> None:
    """Lazily unmount every mount strictly below ``rootfs`` in our namespace, deepest first."""
    prefix = rootfs.rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if mp.startswith(prefix):
            points.append(mp)
    for mp in sorted(points, key=len, reverse=True):
        try:
            syscalls.umount2(mp, syscalls.MNT_DETACH)
        except OSError as err:
            log.warning("failed to unmount %r: %s", mp, err)
