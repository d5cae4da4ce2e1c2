"""``runwasm stress --containerd``: Wasm tasks through a real containerd's gRPC API (1.6 and
2.3.4), all in one shim server, timed, and nothing left behind in containerd or on the host."""

from __future__ import annotations

import pytest

from runwasm.shim.harness.stress import StressError, report
from runwasm.shim.harness.stress_containerd import EXECUTOR, run_stress_containerd
from tests.conftest import built_fixture
from tests.integration.daemon import Containerd

pytestmark = pytest.mark.integration


def test_tasks_run_through_containerd_in_one_shim(containerd: Containerd) -> None:
    r = run_stress_containerd(containerd.address, containerd.namespace, built_fixture("wasm", "hello.wasm"), 6, 3)
    assert (r.tasks, r.inflight, r.failures, r.errors) == (6, 3, 0, ())
    assert len(r.create_start) == len(r.wait_delete) == 6
    assert report(r).startswith("6 tasks, 3 in flight: ")
    assert r.executor == EXECUTOR
    assert [name for name, _ in r.cpu_ms] == ["harness", "server", "zygote", "workloads"]
    assert r.cpu_ms[1][1] > 0  # the server found as the anchor workload's parent did the work
    assert containerd.ctr("containers", "ls", "-q").stdout.split() == []
    assert containerd.tasks() == {}


def test_a_failing_module_stops_at_the_warm_up_and_cleans_up(containerd: Containerd) -> None:
    with pytest.raises(StressError, match="warm-up task failed.*exited 7, expected 0"):
        run_stress_containerd(containerd.address, containerd.namespace, built_fixture("wasm", "exit7.wasm"), 2, 1)
    assert containerd.ctr("containers", "ls", "-q").stdout.split() == []
