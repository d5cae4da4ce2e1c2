"""Task metrics as runc's shim reports them (containerd/cgroups): kernel limits verbatim, never 0 for
"unlimited"; kernel, kernel TCP, swap entries and blkio/io only where the cgroup has the files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runwasm.linux.cgroups import CgroupV1, CgroupV2
from runwasm.linux.stats import UNLIMITED_V2, BlkioEntry, IoEntry, MemEntry, read_metrics

V1_UNLIMITED = 9223372036854771712  # what a v1 kernel prints for an unlimited memory.limit_in_bytes


def _files(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def test_v1_unlimited_kernel_swap_and_blkio(tmp_path: Path) -> None:
    hier = {c: tmp_path / c for c in ("memory", "blkio", "pids", "cpu", "cpuacct")}
    cg = CgroupV1(path="/rw/c1", hierarchies=hier)
    _files(cg.dir("memory"), {
        "memory.limit_in_bytes": f"{V1_UNLIMITED}\n", "memory.usage_in_bytes": "4096\n",
        "memory.memsw.limit_in_bytes": f"{V1_UNLIMITED}\n", "memory.memsw.usage_in_bytes": "8192\n",
        "memory.memsw.max_usage_in_bytes": "9000\n", "memory.memsw.failcnt": "0\n",
        "memory.kmem.limit_in_bytes": f"{V1_UNLIMITED}\n", "memory.kmem.usage_in_bytes": "1024\n",
        "memory.kmem.max_usage_in_bytes": "2048\n", "memory.kmem.failcnt": "3\n"})
    _files(cg.dir("blkio"), {
        "blkio.io_service_bytes_recursive": "",  # no CFQ/BFQ data: the throttle counters are used
        "blkio.throttle.io_service_bytes_recursive": "7:0 Read 512\n7:0 Write 0\nTotal 512\n",
        "blkio.throttle.io_serviced_recursive": "7:0 Read 1\n7:0 Write 0\nTotal 1\n"})
    m = read_metrics(cg)
    assert m.memory.limit == V1_UNLIMITED
    assert m.memory.swap == MemEntry(V1_UNLIMITED, 8192, 9000, 0)
    assert (m.memory.swap_limit, m.memory.swap_usage) == (V1_UNLIMITED, 8192)
    assert m.memory.kernel == MemEntry(V1_UNLIMITED, 1024, 2048, 3)
    assert m.memory.kernel_tcp is None  # no memory.kmem.tcp.* files here
    dev = m.blkio["io_service_bytes_recursive"][0].device
    assert m.blkio["io_service_bytes_recursive"] == (BlkioEntry("Read", dev, 7, 0, 512), BlkioEntry("Write", dev, 7, 0, 0))
    assert m.blkio["io_serviced_recursive"][0].value == 1
    assert set(m.blkio) == {"io_service_bytes_recursive", "io_serviced_recursive"}


def test_v1_without_swap_or_kernel_files_leaves_them_out(tmp_path: Path) -> None:
    hier = {"memory": tmp_path / "memory"}
    cg = CgroupV1(path="/rw/c2", hierarchies=hier)
    _files(cg.dir("memory"), {"memory.limit_in_bytes": "1048576\n", "memory.usage_in_bytes": "4096\n"})
    m = read_metrics(cg)
    assert (m.memory.limit, m.memory.swap, m.memory.kernel, m.memory.swap_limit) == (1 << 20, None, None, 0)
    assert m.blkio == {}


def test_v2_max_is_max_uint64_and_io_stat(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory io pids\n")
    leaf = tmp_path / "rw" / "c3"
    _files(leaf, {"memory.max": "max\n", "memory.swap.max": "max\n", "memory.current": "4096\n",
                  "io.stat": "8:0 rbytes=4096 wbytes=512 rios=2 wios=1 dbytes=0 dios=0\n"})
    m = read_metrics(CgroupV2(path="/rw/c3", root=tmp_path))
    assert (m.memory.limit, m.memory.swap_limit) == (UNLIMITED_V2, UNLIMITED_V2)
    assert m.io == (IoEntry(8, 0, 4096, 512, 2, 1),)


@pytest.mark.privileged
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_real_container_without_a_memory_limit_reports_the_kernels_unlimited() -> None:
    from tests.linux.harness import Bundle, Started, base_config

    b = Bundle(base_config(["sleep", "1000"]))
    try:
        s = Started(b.launch())
        assert s.msg["type"] == "ready", s.msg
        b.container.attach(s.pid)
        s.start()
        m = b.container.stats()
        cg = b.container.cgroup
        assert cg is not None
        if m.version == 1:
            assert isinstance(cg, CgroupV1)
            mem = cg.dir("memory")
            assert m.memory.limit == int((mem / "memory.limit_in_bytes").read_text()) > 1 << 62
            assert (m.memory.kernel is not None) == (mem / "memory.kmem.usage_in_bytes").exists()
            assert (m.memory.swap is not None) == (mem / "memory.memsw.usage_in_bytes").exists()
        else:
            assert m.memory.limit == UNLIMITED_V2
        b.container.kill_all(9)
        s.wait()
    finally:
        b.cleanup()
