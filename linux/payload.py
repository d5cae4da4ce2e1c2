"""The JSON payloads the executor hands to the zygote for ``runwasm.linux.init:main`` and
``runwasm.linux.enter:main``; parsed back into typed values in the workload."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runwasm.oci.runtime_spec import Process, RuntimeSpec, parse_process, process_to_json, spec_to_json
from runwasm.oci.spec_reader import SpecReader
from runwasm.oci.spec_sched import MemoryPolicy, memory_policy_to_json, parse_memory_policy

VERSION = 1


@dataclass(frozen=True, slots=True)
class InitPayload:
    container_id: str
    bundle: str
    rootfs: str                      # absolute host path of the mounted rootfs
    spec: RuntimeSpec
    cgroup_procs: tuple[str, ...]    # cgroup.procs files to join ("0" written to each)
    cgroup_dirs: Mapping[str, str] = field(default_factory=dict)  # hierarchy -> host dir ("" = v2)
    pid_ns_by_zygote: bool = True    # False: init unshares CLONE_NEWPID itself (user ns case)

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "kind": "init", "container_id": self.container_id, "bundle": self.bundle,
                "rootfs": self.rootfs, "spec": spec_to_json(self.spec), "cgroup_procs": list(self.cgroup_procs),
                "cgroup_dirs": dict(self.cgroup_dirs), "pid_ns_by_zygote": self.pid_ns_by_zygote}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InitPayload:
        return cls(container_id=d["container_id"], bundle=d["bundle"], rootfs=d["rootfs"],
                   spec=RuntimeSpec.from_json(d["spec"], source="<init payload>"),
                   cgroup_procs=tuple(d["cgroup_procs"]), cgroup_dirs=dict(d.get("cgroup_dirs") or {}),
                   pid_ns_by_zygote=bool(d.get("pid_ns_by_zygote", True)))


@dataclass(frozen=True, slots=True)
class ExecPayload:
    container_id: str
    exec_id: str
    init_pid: int                    # host pid of the container init (its /proc/<pid>/ns/* are joined)
    namespaces: tuple[str, ...]      # spec namespace types to join, e.g. ("mount", "uts", ...)
    process: Process
    cgroup_procs: tuple[str, ...]
    seccomp: Mapping[str, Any] | None = None
    memory_policy: MemoryPolicy | None = None  # the container's linux.memoryPolicy, as the init has it

    def to_dict(self) -> dict[str, Any]:
        mpol = self.memory_policy
        return {"version": VERSION, "kind": "exec", "container_id": self.container_id, "exec_id": self.exec_id,
                "init_pid": self.init_pid, "namespaces": list(self.namespaces),
                "process": process_to_json(self.process), "cgroup_procs": list(self.cgroup_procs),
                "seccomp": dict(self.seccomp) if self.seccomp is not None else None,
                "memoryPolicy": memory_policy_to_json(mpol) if mpol is not None else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExecPayload:
        return cls(container_id=d["container_id"], exec_id=d["exec_id"], init_pid=int(d["init_pid"]),
                   namespaces=tuple(d["namespaces"]), process=parse_process(d["process"], source="<exec payload>"),
                   cgroup_procs=tuple(d["cgroup_procs"]), seccomp=d.get("seccomp"),
                   memory_policy=parse_memory_policy(SpecReader("<exec payload>"), d.get("memoryPolicy"),
                                                     "linux.memoryPolicy"))
