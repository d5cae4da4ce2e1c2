"""The runtime-spec 1.2 fields NRI sets (scheduler, ioPriority, memoryPolicy, netDevices) and the
refused ones, parsed by ``RuntimeSpec.from_json``."""

from __future__ import annotations

from typing import Any

import pytest

from runwasm.oci.runtime_spec import RuntimeSpec, SpecError, spec_to_json
from runwasm.oci.spec_sched import IoPriority, MemoryPolicy, NetDevice, Scheduler


def _spec(process: dict[str, Any] | None = None, linux: dict[str, Any] | None = None) -> RuntimeSpec:
    return RuntimeSpec.from_json({"ociVersion": "1.2.0", "process": {"args": ["x"], **(process or {})},
                                  "linux": linux or {}})


def test_parses_and_round_trips_the_new_fields() -> None:
    spec = _spec({"scheduler": {"policy": "SCHED_BATCH", "nice": 7, "flags": ["SCHED_FLAG_RESET_ON_FORK"]},
                  "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 6}},
                 {"memoryPolicy": {"mode": "MPOL_BIND", "nodes": "0-2,5", "flags": ["MPOL_F_STATIC_NODES"]},
                  "netDevices": {"eth1": {"name": "in0"}, "eth2": {}}})
    assert spec.process is not None
    assert spec.linux is not None
    assert spec.process.scheduler == Scheduler("SCHED_BATCH", nice=7, flags=("SCHED_FLAG_RESET_ON_FORK",))
    assert spec.process.io_priority == IoPriority("IOPRIO_CLASS_BE", 6)
    assert spec.linux.memory_policy == MemoryPolicy("MPOL_BIND", (0, 1, 2, 5), ("MPOL_F_STATIC_NODES",))
    assert spec.linux.net_devices == (NetDevice("eth1", "in0"), NetDevice("eth2", "eth2"))
    assert RuntimeSpec.from_json(spec_to_json(spec)) == spec


@pytest.mark.parametrize(("process", "linux", "message"), [
    ({"scheduler": {"policy": "SCHED_FAST"}}, {}, "process.scheduler.policy: expected one of"),
    ({"scheduler": {"policy": "SCHED_OTHER", "nice": 20}}, {}, "process.scheduler.nice: expected an integer in -20..19"),
    ({"scheduler": {"policy": "SCHED_OTHER", "flags": ["X"]}}, {}, "process.scheduler.flags[0]: expected one of"),
    ({"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 8}}, {}, "process.ioPriority.priority: expected an integer in 0..7"),
    ({"ioPriority": {"class": "BE"}}, {}, "process.ioPriority.class: expected one of"),
    ({}, {"memoryPolicy": {"mode": "MPOL_BIND"}}, "linux.memoryPolicy.nodes: expected at least one node with MPOL_BIND"),
    ({}, {"memoryPolicy": {"mode": "MPOL_LOCAL", "nodes": "0"}}, "linux.memoryPolicy.nodes: expected no nodes"),
    ({}, {"memoryPolicy": {"mode": "MPOL_BIND", "nodes": "3-1"}}, "expected ascending node ranges within 0..1023"),
    ({}, {"memoryPolicy": {"mode": "MPOL_BIND", "nodes": "zero"}}, "expected a NUMA node list"),
    ({}, {"netDevices": {"a/b": {}}}, "linux.netDevices['a/b']: expected an interface name"),
    ({}, {"netDevices": {"eth1": {"name": "x" * 16}}}, "linux.netDevices['eth1'].name: expected an interface name"),
    ({}, {"intelRdt": {"closID": "gold"}}, "linux.intelRdt: expected not set (runwasm does not manage resctrl"),
    ({}, {"personality": {"domain": "LINUX32"}}, "linux.personality: expected not set"),
    ({}, {"timeOffsets": {"monotonic": {"secs": 1}}}, "linux.timeOffsets: expected not set"),
    ({"execCPUAffinity": {"initial": "0"}}, {}, "process.execCPUAffinity: expected not set"),
])
def test_refuses_bad_or_unhonoured_values(process: dict[str, Any], linux: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match="invalid runtime spec") as err:
        _spec(process, linux)
    assert message in str(err.value)


def test_empty_refused_fields_are_accepted() -> None:
    assert _spec({}, {"intelRdt": None, "personality": {}}).linux is not None
