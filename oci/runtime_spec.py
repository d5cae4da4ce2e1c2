"""Typed model of the OCI runtime spec (``config.json``), parsed once at the boundary.

``RuntimeSpec.from_json`` validates the shape of everything runwasm reads and raises
``SpecError`` naming the JSON path (``process.args[0]: expected a string, got 3``) and the
source (a file path or a label). Nothing past the parser touches raw dicts, except for the
handful of opaque sub-documents kept as ``Mapping`` (seccomp, resources, hooks' env) whose
typed parsing belongs to the module that applies them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runwasm.oci.spec_reader import (
    I64_MAX,
    ID_MAX,
    OOM_SCORE_ADJ,
    RLIMIT_TYPES,
    U16_MAX,
    U32_MAX,
    U64_MAX,
    UMASK_MAX,
    SpecReader,
    check_range,
    check_resources,
    check_seccomp,
)
from runwasm.oci.spec_reader import SpecError as SpecError  # re-exported: the error of this parser
from runwasm.oci.spec_sched import (
    REFUSED_LINUX,
    REFUSED_PROCESS,
    IoPriority,
    MemoryPolicy,
    NetDevice,
    Scheduler,
    memory_policy_to_json,
    parse_io_priority,
    parse_memory_policy,
    parse_net_devices,
    parse_scheduler,
    refuse_unhonoured,
)

# --- model --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    """``process.user`` of the runtime spec."""

    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Rlimit:
    """One entry of ``process.rlimits``."""

    type: str
    hard: int
    soft: int


@dataclass(frozen=True, slots=True)
class Capabilities:
    """``process.capabilities``: the five capability sets."""

    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConsoleSize:
    """``process.consoleSize``."""

    height: int
    width: int


@dataclass(frozen=True, slots=True)
class Process:
    """``process`` of the runtime spec."""

    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    terminal: bool = False
    user: User = field(default_factory=User)
    capabilities: Capabilities | None = None
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    apparmor_profile: str = ""
    oom_score_adj: int | None = None
    selinux_label: str = ""
    console_size: ConsoleSize | None = None
    scheduler: Scheduler | None = None
    io_priority: IoPriority | None = None

    def env_map(self) -> dict[str, str]:
        """The environment as a dict (later entries win, like execve consumers do)."""
        out: dict[str, str] = {}
        for item in self.env:
            k, _, v = item.partition("=")
            out[k] = v
        return out


@dataclass(frozen=True, slots=True)
class Root:
    """``root`` of the runtime spec."""

    path: str = "rootfs"
    readonly: bool = False


@dataclass(frozen=True, slots=True)
class Mount:
    """One entry of ``mounts``."""

    destination: str
    type: str = ""
    source: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Hook:
    """One hook of ``hooks``."""

    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class Hooks:
    """``hooks`` of the runtime spec, by phase."""

    prestart: tuple[Hook, ...] = ()
    create_runtime: tuple[Hook, ...] = ()
    create_container: tuple[Hook, ...] = ()
    start_container: tuple[Hook, ...] = ()
    poststart: tuple[Hook, ...] = ()
    poststop: tuple[Hook, ...] = ()


@dataclass(frozen=True, slots=True)
class Namespace:
    """One entry of ``linux.namespaces``."""

    type: str
    path: str = ""


@dataclass(frozen=True, slots=True)
class IdMapping:
    """One entry of ``linux.uidMappings``/``gidMappings``."""

    container_id: int
    host_id: int
    size: int


@dataclass(frozen=True, slots=True)
class Device:
    """One entry of ``linux.devices``."""

    path: str
    type: str
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


NAMESPACE_TYPES = frozenset({"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"})


@dataclass(frozen=True, slots=True)
class Linux:
    """``linux`` of the runtime spec."""

    namespaces: tuple[Namespace, ...] = ()
    uid_mappings: tuple[IdMapping, ...] = ()
    gid_mappings: tuple[IdMapping, ...] = ()
    devices: tuple[Device, ...] = ()
    cgroups_path: str = ""
    resources: Mapping[str, Any] = field(default_factory=dict)
    sysctl: Mapping[str, str] = field(default_factory=dict)
    seccomp: Mapping[str, Any] | None = None
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    rootfs_propagation: str = ""
    mount_label: str = ""
    memory_policy: MemoryPolicy | None = None
    net_devices: tuple[NetDevice, ...] = ()

    def namespace(self, kind: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == kind:
                return ns
        return None


@dataclass(frozen=True, slots=True)
class RuntimeSpec:
    """A runtime spec (``config.json``), parsed: every field runwasm honours or refuses."""

    oci_version: str
    process: Process | None
    root: Root | None
    hostname: str = ""
    domainname: str = ""
    mounts: tuple[Mount, ...] = ()
    hooks: Hooks = field(default_factory=Hooks)
    annotations: Mapping[str, str] = field(default_factory=dict)
    linux: Linux | None = None

    @classmethod
    def load(cls, bundle: Path) -> RuntimeSpec:
        """Read and parse ``<bundle>/config.json``."""
        path = bundle / "config.json"
        try:
            data = path.read_bytes()
        except OSError as err:
            raise SpecError(f"failed to read runtime spec {str(path)!r}: {err.strerror}") from err
        return cls.from_json(data, source=repr(str(path)))

    @classmethod
    def from_json(cls, data: bytes | str | Mapping[str, Any], *, source: str = "<config.json>") -> RuntimeSpec:
        """Parse a runtime spec; raises SpecError naming ``source`` and the JSON path."""
        doc = _decode(data, f"invalid runtime spec {source}") if isinstance(data, bytes | str) else data
        r = SpecReader(source)
        top = r.obj(doc, "$")
        proc = _process(r, top.get("process"), "process") if top.get("process") is not None else None
        root_d = top.get("root")
        root = None
        if root_d is not None:
            rd = r.obj(root_d, "root")
            root = Root(path=r.str_(rd, "path", "root", "rootfs"), readonly=r.bool_(rd, "readonly", "root"))
        ann = r.obj(top.get("annotations"), "annotations")
        for k, v in ann.items():
            if not isinstance(v, str):
                raise r.fail(f"annotations[{k!r}]", "a string", v)
        mounts = tuple(_mount(r, m, f"mounts[{i}]") for i, m in enumerate(r.list_(top, "mounts", "")))
        linux = _linux(r, top.get("linux"), "linux") if top.get("linux") is not None else None
        return cls(
            oci_version=r.str_(top, "ociVersion", ""),
            process=proc,
            root=root,
            hostname=r.str_(top, "hostname", ""),
            domainname=r.str_(top, "domainname", ""),
            mounts=mounts,
            hooks=_hooks(r, top.get("hooks"), "hooks"),
            annotations=dict(ann),
            linux=linux,
        )


def parse_process(data: bytes | str | Mapping[str, Any], *, source: str = "<process>") -> Process:
    """Parse a bare OCI ``Process`` document (the spec of an Exec request)."""
    doc = _decode(data, f"invalid process spec {source}") if isinstance(data, bytes | str) else data
    return _process(SpecReader(source), doc, "process")


def _decode(data: bytes | str, what: str) -> Any:
    """json.loads with every failure a SpecError: bad syntax or encoding, and nesting deeper than
    the interpreter's recursion limit (RecursionError, which is not a ValueError)."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise SpecError(f"{what}: not JSON: {err}") from err
    except RecursionError as err:
        raise SpecError(f"{what}: not accepted: JSON nested too deeply") from err


def _process(r: SpecReader, d: Any, path: str) -> Process:
    p = r.obj(d, path)
    refuse_unhonoured(r, p, path, REFUSED_PROCESS)
    args = r.strs(p, "args", path)
    up = f"{path}.user"
    user_d = r.obj(p.get("user"), up)
    gids = user_d.get("additionalGids") or []
    if not isinstance(gids, list) or not all(isinstance(g, int) and not isinstance(g, bool) for g in gids):
        raise r.fail(f"{up}.additionalGids", "an array of integers", gids)
    for i, g in enumerate(gids):
        check_range(g, 0, ID_MAX, f"{up}.additionalGids[{i}]", r.source, what=r.what)
    user = User(
        uid=r.ranged(user_d, "uid", up, 0, ID_MAX) or 0,
        gid=r.ranged(user_d, "gid", up, 0, ID_MAX) or 0,
        umask=r.ranged(user_d, "umask", up, 0, UMASK_MAX, "0o777"),
        additional_gids=tuple(gids),
    )
    caps = None
    if p.get("capabilities") is not None:
        c = r.obj(p.get("capabilities"), f"{path}.capabilities")
        cp = f"{path}.capabilities"
        caps = Capabilities(*(r.strs(c, k, cp) for k in ("bounding", "effective", "permitted", "inheritable", "ambient")))
    rlimits: list[Rlimit] = []
    for i, item in enumerate(r.list_(p, "rlimits", path)):
        rp = f"{path}.rlimits[{i}]"
        o = r.obj(item, rp)
        kind = r.str_(o, "type", rp)
        if kind not in RLIMIT_TYPES:
            raise r.fail(f"{rp}.type", f"one of {sorted(RLIMIT_TYPES)}", kind)
        if any(x.type == kind for x in rlimits):
            raise r.fail(f"{rp}.type", "each rlimit type at most once", kind)
        hard = r.ranged(o, "hard", rp, 0, U64_MAX) or 0
        soft = r.ranged(o, "soft", rp, 0, U64_MAX) or 0
        if soft > hard:
            raise r.fail(f"{rp}.soft", f"at most the hard limit {hard}", soft)
        rlimits.append(Rlimit(type=kind, hard=hard, soft=soft))
    cs = None
    if p.get("consoleSize") is not None:
        csp = f"{path}.consoleSize"
        o = r.obj(p.get("consoleSize"), csp)
        cs = ConsoleSize(height=r.ranged(o, "height", csp, 0, U16_MAX) or 0, width=r.ranged(o, "width", csp, 0, U16_MAX) or 0)
    return Process(
        args=args,
        env=r.strs(p, "env", path),
        cwd=r.str_(p, "cwd", path, "/") or "/",
        terminal=r.bool_(p, "terminal", path),
        user=user,
        capabilities=caps,
        rlimits=tuple(rlimits),
        no_new_privileges=r.bool_(p, "noNewPrivileges", path),
        apparmor_profile=r.str_(p, "apparmorProfile", path),
        oom_score_adj=r.ranged(p, "oomScoreAdj", path, *OOM_SCORE_ADJ),
        selinux_label=r.str_(p, "selinuxLabel", path),
        console_size=cs,
        scheduler=parse_scheduler(r, p.get("scheduler"), f"{path}.scheduler"),
        io_priority=parse_io_priority(r, p.get("ioPriority"), f"{path}.ioPriority"),
    )


def _mount(r: SpecReader, d: Any, path: str) -> Mount:
    m = r.obj(d, path)
    dest = r.str_(m, "destination", path)
    if not dest:
        raise r.fail(f"{path}.destination", "a non-empty path", m.get("destination"))
    return Mount(destination=dest, type=r.str_(m, "type", path), source=r.str_(m, "source", path),
                 options=r.strs(m, "options", path))


def _hooks(r: SpecReader, d: Any, path: str) -> Hooks:
    h = r.obj(d, path)

    def group(key: str) -> tuple[Hook, ...]:
        out = []
        for i, item in enumerate(r.list_(h, key, path)):
            hp = f"{path}.{key}[{i}]"
            o = r.obj(item, hp)
            hook_path = r.str_(o, "path", hp)
            if not hook_path:
                raise r.fail(f"{hp}.path", "a non-empty path", o.get("path"))
            out.append(Hook(path=hook_path, args=r.strs(o, "args", hp), env=r.strs(o, "env", hp),
                            timeout=r.ranged(o, "timeout", hp, 1, I64_MAX, "seconds, > 0")))
        return tuple(out)

    return Hooks(prestart=group("prestart"), create_runtime=group("createRuntime"),
                 create_container=group("createContainer"), start_container=group("startContainer"),
                 poststart=group("poststart"), poststop=group("poststop"))


def _idmaps(r: SpecReader, lin: Mapping[str, Any], key: str, path: str) -> tuple[IdMapping, ...]:
    out = []
    for i, item in enumerate(r.list_(lin, key, path)):
        ip = f"{path}.{key}[{i}]"
        o = r.obj(item, ip)
        out.append(IdMapping(container_id=r.ranged(o, "containerID", ip, 0, U32_MAX) or 0,
                             host_id=r.ranged(o, "hostID", ip, 0, U32_MAX) or 0,
                             size=r.ranged(o, "size", ip, 0, U32_MAX) or 0))
    return tuple(out)


def _linux(r: SpecReader, d: Any, path: str) -> Linux:
    lin = r.obj(d, path)
    refuse_unhonoured(r, lin, path, REFUSED_LINUX)
    namespaces = []
    for i, item in enumerate(r.list_(lin, "namespaces", path)):
        np_ = f"{path}.namespaces[{i}]"
        o = r.obj(item, np_)
        kind = r.str_(o, "type", np_)
        if kind not in NAMESPACE_TYPES:
            raise r.fail(f"{np_}.type", f"one of {sorted(NAMESPACE_TYPES)}", kind)
        namespaces.append(Namespace(type=kind, path=r.str_(o, "path", np_)))
    devices = []
    for i, item in enumerate(r.list_(lin, "devices", path)):
        dp = f"{path}.devices[{i}]"
        o = r.obj(item, dp)
        devices.append(Device(path=r.str_(o, "path", dp), type=r.str_(o, "type", dp),
                              major=r.ranged(o, "major", dp, 0, U32_MAX) or 0,
                              minor=r.ranged(o, "minor", dp, 0, U32_MAX) or 0,
                              file_mode=r.ranged(o, "fileMode", dp, 0, 0o7777, "0o7777"),
                              uid=r.ranged(o, "uid", dp, 0, ID_MAX), gid=r.ranged(o, "gid", dp, 0, ID_MAX)))
    sysctl = r.obj(lin.get("sysctl"), f"{path}.sysctl")
    for k, v in sysctl.items():
        if not isinstance(v, str):
            raise r.fail(f"{path}.sysctl[{k!r}]", "a string", v)
    seccomp = lin.get("seccomp")
    resources = dict(r.obj(lin.get("resources"), f"{path}.resources"))
    check_resources(resources, f"{path}.resources", r.source)
    if seccomp is not None:
        check_seccomp(r, r.obj(seccomp, f"{path}.seccomp"), f"{path}.seccomp")
    return Linux(
        namespaces=tuple(namespaces),
        uid_mappings=_idmaps(r, lin, "uidMappings", path),
        gid_mappings=_idmaps(r, lin, "gidMappings", path),
        devices=tuple(devices),
        cgroups_path=r.str_(lin, "cgroupsPath", path),
        resources=resources,
        sysctl=dict(sysctl),
        seccomp=dict(r.obj(seccomp, f"{path}.seccomp")) if seccomp is not None else None,
        masked_paths=r.strs(lin, "maskedPaths", path),
        readonly_paths=r.strs(lin, "readonlyPaths", path),
        rootfs_propagation=r.str_(lin, "rootfsPropagation", path),
        mount_label=r.str_(lin, "mountLabel", path),
        memory_policy=parse_memory_policy(r, lin.get("memoryPolicy"), f"{path}.memoryPolicy"),
        net_devices=parse_net_devices(r, lin.get("netDevices"), f"{path}.netDevices"),
    )

# --- serialization (inverse of the parsers; used to hand a parsed spec to a workload process) ---


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in (None, "", [], {}, False)}


def process_to_json(p: Process) -> dict[str, Any]:
    """The OCI JSON of ``p``; ``parse_process(process_to_json(p)) == p``."""
    user: dict[str, Any] = {"uid": p.user.uid, "gid": p.user.gid}
    if p.user.umask is not None:
        user["umask"] = p.user.umask
    if p.user.additional_gids:
        user["additionalGids"] = list(p.user.additional_gids)
    out = _drop_empty({
        "args": list(p.args), "env": list(p.env), "terminal": p.terminal,
        "noNewPrivileges": p.no_new_privileges, "apparmorProfile": p.apparmor_profile,
        "selinuxLabel": p.selinux_label, "oomScoreAdj": p.oom_score_adj,
        "rlimits": [{"type": r.type, "hard": r.hard, "soft": r.soft} for r in p.rlimits],
    })
    out["cwd"] = p.cwd
    out["user"] = user
    if p.capabilities is not None:
        c = p.capabilities
        out["capabilities"] = {"bounding": list(c.bounding), "effective": list(c.effective),
                               "permitted": list(c.permitted), "inheritable": list(c.inheritable),
                               "ambient": list(c.ambient)}
    if p.console_size is not None:
        out["consoleSize"] = {"height": p.console_size.height, "width": p.console_size.width}
    if p.scheduler is not None:
        s = p.scheduler
        out["scheduler"] = {"policy": s.policy, "nice": s.nice, "priority": s.priority, "flags": list(s.flags),
                            "runtime": s.runtime, "deadline": s.deadline, "period": s.period}
    if p.io_priority is not None:
        out["ioPriority"] = {"class": p.io_priority.io_class, "priority": p.io_priority.priority}
    return out


def _hook_json(h: Hook) -> dict[str, Any]:
    return _drop_empty({"path": h.path, "args": list(h.args), "env": list(h.env), "timeout": h.timeout})


def spec_to_json(spec: RuntimeSpec) -> dict[str, Any]:
    """The OCI JSON of ``spec``; ``RuntimeSpec.from_json(spec_to_json(s)) == s``."""
    out: dict[str, Any] = {"ociVersion": spec.oci_version}
    if spec.process is not None:
        out["process"] = process_to_json(spec.process)
    if spec.root is not None:
        out["root"] = {"path": spec.root.path, "readonly": spec.root.readonly}
    out.update(_drop_empty({"hostname": spec.hostname, "domainname": spec.domainname,
                            "annotations": dict(spec.annotations)}))
    out["mounts"] = [_drop_empty({"destination": m.destination, "type": m.type, "source": m.source,
                                  "options": list(m.options)}) for m in spec.mounts]
    h = spec.hooks
    hooks = _drop_empty({key: [_hook_json(x) for x in group] for key, group in (
        ("prestart", h.prestart), ("createRuntime", h.create_runtime), ("createContainer", h.create_container),
        ("startContainer", h.start_container), ("poststart", h.poststart), ("poststop", h.poststop))})
    if hooks:
        out["hooks"] = hooks
    if spec.linux is not None:
        lin = spec.linux

        def maps(ms: tuple[IdMapping, ...]) -> list[dict[str, int]]:
            return [{"containerID": m.container_id, "hostID": m.host_id, "size": m.size} for m in ms]

        devices = []
        for d in lin.devices:
            dev: dict[str, Any] = {"path": d.path, "type": d.type, "major": d.major, "minor": d.minor}
            dev.update({k: v for k, v in (("fileMode", d.file_mode), ("uid", d.uid), ("gid", d.gid)) if v is not None})
            devices.append(dev)
        lj = _drop_empty({
            "namespaces": [_drop_empty({"type": n.type, "path": n.path}) for n in lin.namespaces],
            "uidMappings": maps(lin.uid_mappings), "gidMappings": maps(lin.gid_mappings),
            "devices": devices, "cgroupsPath": lin.cgroups_path, "resources": dict(lin.resources),
            "sysctl": dict(lin.sysctl), "maskedPaths": list(lin.masked_paths),
            "readonlyPaths": list(lin.readonly_paths), "rootfsPropagation": lin.rootfs_propagation,
            "mountLabel": lin.mount_label,
        })
        if lin.seccomp is not None:
            lj["seccomp"] = dict(lin.seccomp)
        if lin.memory_policy is not None:
            lj["memoryPolicy"] = memory_policy_to_json(lin.memory_policy)
        if lin.net_devices:
            lj["netDevices"] = {d.host_name: {"name": d.name} for d in lin.net_devices}
        out["linux"] = lj
    return out
