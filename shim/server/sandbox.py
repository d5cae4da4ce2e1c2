"""The Sandbox API (``containerd.runtime.sandbox.v1.Sandbox``): a pod that is one shim server from
its first RPC, for containerd 2.x runtimes configured with ``sandboxer = "shim"``.

containerd's ``shim`` sandbox controller runs ``start`` with ``-id <sandbox id>`` and a bundle
without ``config.json`` (so the group, and the server, is the sandbox's), then calls
CreateSandbox and StartSandbox here. CRI has already made the pod's network namespace (and run
CNI in it) and passes its path and the ``runtime.v1.PodSandboxConfig`` as ``options``. The
containers of the pod are later created through the Task API on this same server (containerd
reuses the sandbox's address; no ``start`` per container).

There is no pause container. CRI builds each container's namespaces as
``/proc/<StartSandbox pid>/ns/{net,ipc,uts,pid}``, so the pid returned is a **namespace holder**
(``runwasm.shim.spawn.pod_holder``): a process in the pod's network namespace, with new IPC and
UTS namespaces (the pod's hostname) and, unless the pod uses the node's, a new pid namespace of
which it is pid 1 — what the pause process would hold.

States (one sandbox per server; any other id is NotFound):

    (none) --Create--> created --Start--> running --Stop / holder exits--> stopped
    created --Stop--> stopped;   any --Shutdown--> gone (the server exits)

Create of an id that exists is AlreadyExists, a second sandbox on one server FailedPrecondition;
Start when not ``created`` is FailedPrecondition; Stop is idempotent; Wait blocks until
``stopped``. Pod-level resources (``linux.overhead``/``linux.resources`` and containerd 2.3's
``UpdatePodSandboxResources``) are enforced by the pod cgroup the kubelet manages
(``linux.cgroup_parent``); containerd 2.3.4 has no UpdateSandbox RPC, so no update reaches a
shim (docs/design.md, "Sandbox API").
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from runwasm.shim.common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)

log = logging.getLogger(__name__)

POD_CONFIG_TYPE = "runtime.v1.PodSandboxConfig"
CONTAINERS_DIR = "containers"  # <sandbox bundle>/containers/<id>/: copies of each container's records
RECORD_FILES = ("runwasm.json", "linux-state.json", "wasm-state.json")  # what ``delete`` cleans from
# CRI's sandbox states (internal/cri/store/sandbox State.String())
STATE_READY = "SANDBOX_READY"
STATE_NOTREADY = "SANDBOX_NOTREADY"
# sysctls that belong to a namespace the pod owns (as runc's validation): anything else would
# change the node
_IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64"}

NS_POD, NS_CONTAINER, NS_NODE, NS_TARGET = 0, 1, 2, 3  # runtime.v1.NamespaceMode


class Phase(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class PodConfig:
    """What the server uses from ``runtime.v1.PodSandboxConfig`` (parsed at the boundary)."""

    hostname: str = ""
    cgroup_parent: str = ""
    network_mode: int = NS_POD
    pid_mode: int = NS_POD
    ipc_mode: int = NS_POD
    sysctls: tuple[tuple[str, str], ...] = ()
    name: str = ""
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class HolderSpec:
    """The namespace holder to launch (``runwasm.shim.spawn.pod_holder``)."""

    sandbox_id: str
    bundle: str
    cgroup_path: str
    netns_path: str
    new_pidns: bool
    unshare_ipc: bool
    unshare_uts: bool
    hostname: str
    sysctls: tuple[tuple[str, str], ...]


ExitCallback = Callable[[int, int], None]  # (exit status, exited_at ns)


class HolderLauncher(Protocol):
    async def launch(self, spec: HolderSpec, on_exit: ExitCallback) -> int:
        """Start the holder; return its host pid once it is set up. ``on_exit`` runs once when
        it exits. Raises a ShimError (or OSError) when it cannot be set up."""
        ...

    def signal(self, pid: int, sig: int) -> None: ...

    def release(self, pid: int) -> None:
        """The holder has exited: remove what was made for it (its cgroup)."""
        ...


@dataclass
class Sandbox:
    id: str
    bundle: str
    netns_path: str
    config: PodConfig
    annotations: Mapping[str, str]
    created_at_ns: int
    phase: Phase = Phase.CREATED
    pid: int = 0
    exit_status: int = 0
    exited_at_ns: int | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)


def parse_pod_config(type_url: str, value: bytes) -> PodConfig:
    """``CreateSandboxRequest.options``: a ``runtime.v1.PodSandboxConfig`` (or nothing)."""
    if not type_url and not value:
        return PodConfig()
    if type_url.rsplit("/", 1)[-1] != POD_CONFIG_TYPE:
        raise InvalidArgumentError(f"CreateSandbox options: expected a {POD_CONFIG_TYPE} (CRI's pod config), "
                                   f"got type {type_url!r}")
    from google.protobuf.message import DecodeError

    from runwasm.shim.api.cri import runtime_pb2

    try:
        cfg = runtime_pb2.PodSandboxConfig.FromString(value)
    except DecodeError as err:
        raise InvalidArgumentError(f"CreateSandbox options: cannot decode {POD_CONFIG_TYPE}: {err}") from err
    ns = cfg.linux.security_context.namespace_options
    if ns.HasField("userns_options") and ns.userns_options.mode == NS_POD:
        raise UnimplementedError("pod user namespaces (namespace_options.userns_options.mode = POD) are not "
                                     "supported by runwasm's Sandbox API; use the podsandbox sandboxer")
    for what, mode in (("network", ns.network), ("pid", ns.pid), ("ipc", ns.ipc)):
        if mode not in (NS_POD, NS_CONTAINER, NS_NODE):
            raise InvalidArgumentError(f"CreateSandbox options: namespace_options.{what} = {mode} is not a pod "
                                       "mode (expected POD, CONTAINER or NODE)")
    sysctls = tuple(sorted(cfg.linux.sysctls.items()))
    host_net = ns.network == NS_NODE
    for key, _value in sysctls:
        if key.startswith("net.") and not host_net:
            continue
        if (key in _IPC_SYSCTLS or key.startswith("fs.mqueue.")) and ns.ipc != NS_NODE:
            continue
        raise InvalidArgumentError(
            f"CreateSandbox options: linux.sysctls[{key!r}] is not namespaced in this pod (allowed: net.* without "
            f"host network; {', '.join(_IPC_SYSCTLS)} and fs.mqueue.* without host IPC)")
    return PodConfig(hostname=cfg.hostname, cgroup_parent=cfg.linux.cgroup_parent, network_mode=ns.network,
                     pid_mode=ns.pid, ipc_mode=ns.ipc, sysctls=sysctls, name=cfg.metadata.name,
                     namespace=cfg.metadata.namespace)


def sandbox_spec(h: HolderSpec, pid: int, annotations: Mapping[str, str]) -> dict[str, object]:
    """The OCI runtime spec of the sandbox, as a pause container's would describe it (CRI reads
    ``StartSandboxResponse.spec``): the namespaces the holder keeps, its cgroup, hostname, sysctls."""
    namespaces: list[dict[str, str]] = []
    if h.netns_path:
        namespaces.append({"type": "network", "path": h.netns_path})
    for kind, held in (("ipc", h.unshare_ipc), ("uts", h.unshare_uts), ("pid", h.new_pidns)):
        if held:
            namespaces.append({"type": kind, "path": f"/proc/{pid}/ns/{kind}"})
    linux: dict[str, object] = {"cgroupsPath": h.cgroup_path, "namespaces": namespaces}
    if h.sysctls:
        linux["sysctl"] = dict(h.sysctls)
    spec: dict[str, object] = {"ociVersion": "1.2.0", "linux": linux, "annotations": dict(annotations)}
    if h.hostname:
        spec["hostname"] = h.hostname
    return spec


def _snapshot(bundle: Path, copy: Path) -> None:
    import shutil  # here: ~3 ms at import (bz2, lzma), which a server of Task-API pods never needs

    try:
        copy.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (bundle / name).exists():
                shutil.copyfile(bundle / name, copy / name)
    except OSError as err:  # the pod runs on; only the clean-up after a crashed server is at stake
        log.warning("failed to copy the records of container bundle %r to %r: %s", str(bundle), str(copy), err)


def host_platform() -> tuple[str, str, str]:
    """(os, architecture, variant) in Go's names: the platform containers of the pod run on."""
    machine = os.uname().machine
    return "linux", _GOARCH.get(machine, machine), ("v8" if machine == "aarch64" else "")


class SandboxService:
    """The Sandbox API's state machine. ``kill_containers`` stops what the pod still runs (called by
    Stop/Shutdown; CRI normally stopped them already); ``on_shutdown`` ends the server."""

    def __init__(self, namespace: str, launcher: HolderLauncher, kill_containers: Callable[[], Awaitable[None]],
                 on_shutdown: Callable[[], None], clock: Callable[[], int] = time.time_ns) -> None:
        self._namespace = namespace
        self._launcher = launcher
        self._kill_containers = kill_containers
        self._on_shutdown = on_shutdown
        self._clock = clock
        self.sandbox: Sandbox | None = None

    def _get(self, sandbox_id: str, action: str) -> Sandbox:
        sb = self.sandbox
        if sb is None or sb.id != sandbox_id:
            served = f"; this shim server serves sandbox {sb.id!r}" if sb is not None else ""
            raise NotFoundError(f"failed to {action} sandbox {sandbox_id!r}: not found{served}")
        return sb

    def create(self, sandbox_id: str, bundle: str, netns_path: str, options: tuple[str, bytes] | None,
               annotations: Mapping[str, str], rootfs_count: int = 0) -> None:
        if not sandbox_id:
            raise InvalidArgumentError("failed to create sandbox: sandbox_id is empty")
        if self.sandbox is not None:
            if self.sandbox.id == sandbox_id:
                raise AlreadyExistsError(f"failed to create sandbox {sandbox_id!r}: already exists "
                                         f"({self.sandbox.phase.value})")
            raise FailedPreconditionError(f"failed to create sandbox {sandbox_id!r}: this shim server already serves "
                                          f"sandbox {self.sandbox.id!r} (one sandbox per server)")
        if rootfs_count:
            raise InvalidArgumentError(f"failed to create sandbox {sandbox_id!r}: got {rootfs_count} rootfs mount(s); "
                                       "a runwasm sandbox has no root filesystem (it runs no pause image)")
        config = parse_pod_config(*options) if options is not None else PodConfig()
        if config.network_mode != NS_NODE and not netns_path:
            raise InvalidArgumentError(f"failed to create sandbox {sandbox_id!r}: the pod does not use the node's "
                                       "network (namespace_options.network != NODE) but netns_path is empty")
        self.sandbox = Sandbox(sandbox_id, bundle, netns_path, config, dict(annotations), self._clock())
        log.info("sandbox %s created (pod %s/%s, netns %s)", sandbox_id, config.namespace, config.name,
                 netns_path or "<node>")

    async def start(self, sandbox_id: str) -> tuple[int, int, dict[str, object]]:
        """Launch the namespace holder; (its pid, created_at ns, the sandbox's OCI spec)."""
        sb = self._get(sandbox_id, "start")
        if sb.phase is not Phase.CREATED:
            raise FailedPreconditionError(f"failed to start sandbox {sandbox_id!r}: it is {sb.phase.value}, "
                                          "expected created")
        c = sb.config
        spec = HolderSpec(sandbox_id=sb.id, bundle=sb.bundle, cgroup_path=self._cgroup_path(sb),
                          netns_path=sb.netns_path, new_pidns=c.pid_mode != NS_NODE,
                          unshare_ipc=c.ipc_mode != NS_NODE, unshare_uts=c.network_mode != NS_NODE,
                          hostname=c.hostname if c.network_mode != NS_NODE else "", sysctls=c.sysctls)
        sb.phase = Phase.RUNNING  # before the await: a concurrent Start must fail, not launch twice
        try:
            sb.pid = await self._launcher.launch(spec, lambda status, at: self._exited(sb, status, at))
        except BaseException:
            if sb.phase is Phase.RUNNING:
                sb.phase = Phase.CREATED
            raise
        if sb.phase is not Phase.RUNNING:  # stopped (or its holder died) while it was starting
            self._launcher.signal(sb.pid, signal.SIGKILL)
            raise FailedPreconditionError(f"failed to start sandbox {sandbox_id!r}: it was stopped while starting")
        log.info("sandbox %s started: namespace holder pid %d", sandbox_id, sb.pid)
        return sb.pid, sb.created_at_ns, sandbox_spec(spec, sb.pid, sb.annotations)

    def _cgroup_path(self, sb: Sandbox) -> str:
        """Where CRI would put the pause container: ``<cgroup_parent>/<sandbox id>`` (cgroupfs)."""
        parent = sb.config.cgroup_parent.rstrip("/") or f"/runwasm/{self._namespace}"
        return f"{parent}/{sb.id}"

    def _exited(self, sb: Sandbox, status: int, at_ns: int) -> None:
        if sb.phase is not Phase.STOPPED:
            log.info("sandbox %s: namespace holder pid %d exited with status %d", sb.id, sb.pid, status)
            sb.phase, sb.exit_status, sb.exited_at_ns = Phase.STOPPED, status, at_ns
        if sb.pid:
            self._launcher.release(sb.pid)
        sb.stopped.set()

    def observe(self, event: object) -> None:
        """Task events of this server. containerd runs ``delete`` only on the sandbox bundle after
        the server dies (a sandboxed container gets none, and its bundle may be gone by then), so
        each container's clean-up records are copied at TaskCreate into
        ``<sandbox bundle>/containers/<id>/`` (dropped at TaskDelete), where ``delete`` finds them."""
        sb = self.sandbox
        if sb is None:
            return
        name = type(event).__name__
        cid = str(getattr(event, "container_id", ""))
        if not cid or "/" in cid or cid in (".", ".."):
            return
        copy = Path(sb.bundle, CONTAINERS_DIR, cid)
        if name == "TaskCreate":
            _snapshot(Path(str(getattr(event, "bundle", ""))), copy)
        elif name == "TaskDelete" and not getattr(event, "id", ""):  # the container, not an exec
            import shutil

            shutil.rmtree(copy, ignore_errors=True)

    def platform(self, sandbox_id: str) -> tuple[str, str, str]:
        self._get(sandbox_id, "get the platform of")
        return host_platform()

    async def stop(self, sandbox_id: str, timeout_secs: int) -> None:
        sb = self._get(sandbox_id, "stop")
        if sb.phase is Phase.STOPPED:
            return
        await self._kill_containers()
        if sb.phase is Phase.CREATED or sb.pid == 0:
            self._exited(sb, 0, self._clock())
            return
        self._launcher.signal(sb.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(sb.stopped.wait(), timeout=max(timeout_secs, 1))
        except TimeoutError:
            log.warning("sandbox %s: namespace holder pid %d ignored SIGTERM for %ds; killing it", sb.id, sb.pid,
                        max(timeout_secs, 1))
            self._launcher.signal(sb.pid, signal.SIGKILL)
            await sb.stopped.wait()

    async def wait(self, sandbox_id: str) -> tuple[int, int | None]:
        sb = self._get(sandbox_id, "wait for")
        await sb.stopped.wait()
        return sb.exit_status, sb.exited_at_ns

    def status(self, sandbox_id: str, verbose: bool) -> tuple[Sandbox, str, dict[str, str]]:
        sb = self._get(sandbox_id, "get the status of")
        state = STATE_READY if sb.phase is Phase.RUNNING else STATE_NOTREADY
        info: dict[str, str] = {}
        if verbose:
            info = {"phase": sb.phase.value, "holder_pid": str(sb.pid), "netns": sb.netns_path, "cgroup_parent": sb.config.cgroup_parent,
                    "hostname": sb.config.hostname, "bundle": sb.bundle}
        return sb, state, info

    def ping(self, sandbox_id: str) -> None:
        sb = self._get(sandbox_id, "ping")
        if sb.phase is Phase.STOPPED:
            raise FailedPreconditionError(f"sandbox {sandbox_id!r} is stopped (namespace holder exited with status "
                                          f"{sb.exit_status})")

    async def shutdown(self, sandbox_id: str) -> None:
        """Stop the sandbox if needed and end the server (containerd deletes the bundle after)."""
        self._get(sandbox_id, "shut down")
        await self.stop(sandbox_id, 0)
        self.sandbox = None
        self._on_shutdown()

    def metrics(self, sandbox_id: str) -> tuple[str, bytes]:
        """The pod cgroup's (``linux.cgroup_parent``) metrics as (type_url, value)."""
        sb = self._get(sandbox_id, "get metrics of")
        if not sb.config.cgroup_parent:
            raise FailedPreconditionError(f"sandbox {sandbox_id!r} has no pod cgroup (linux.cgroup_parent is empty in "
                                          "its pod config)")
        from runwasm.linux.cgroups import detect, validate_path
        from runwasm.linux.stats import read_metrics
        from runwasm.shim.server.metrics import encode_metrics

        cg = detect(validate_path(sb.config.cgroup_parent))
        if not any(d.is_dir() for d in cg.dirs().values()):
            raise NotFoundError(f"sandbox {sandbox_id!r}: pod cgroup {sb.config.cgroup_parent!r} does not exist")
        return encode_metrics(read_metrics(cg))
