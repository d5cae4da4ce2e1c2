"""Encode the Linux executor's cgroup ``Metrics`` as the protobufs CRI accepts from ``Stats``.

``io.containerd.cgroups.v1.Metrics`` (containerd/cgroups ``stats/v1/metrics.proto``) for
cgroup v1 hosts and ``io.containerd.cgroups.v2.Metrics`` (``cgroup2/stats/metrics.proto``)
for v2; field numbers follow those files. Encoded with the small wire writer: only the fields
runwasm reads are written; the swap/kernel/kernel_tcp entries and blkio/io only where the cgroup
has them (``runwasm.linux.stats``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runwasm.linux.stats import BlkioEntry, MemEntry
from runwasm.shim.common import wire

if TYPE_CHECKING:
    from runwasm.linux.stats import Metrics

V1_TYPE = "io.containerd.cgroups.v1.Metrics"
V2_TYPE = "io.containerd.cgroups.v2.Metrics"

# memory.stat keys -> v1 MemoryStat field numbers
_V1_MEM = {"cache": 1, "rss": 2, "rss_huge": 3, "mapped_file": 4, "dirty": 5, "writeback": 6,
           "pgpgin": 7, "pgpgout": 8, "pgfault": 9, "pgmajfault": 10, "inactive_anon": 11,
           "active_anon": 12, "inactive_file": 13, "active_file": 14, "unevictable": 15,
           "hierarchical_memory_limit": 16, "hierarchical_memsw_limit": 17, "total_cache": 18,
           "total_rss": 19, "total_rss_huge": 20, "total_mapped_file": 21, "total_dirty": 22,
           "total_writeback": 23, "total_pgpgin": 24, "total_pgpgout": 25, "total_pgfault": 26,
           "total_pgmajfault": 27, "total_inactive_anon": 28, "total_active_anon": 29,
           "total_inactive_file": 30, "total_active_file": 31, "total_unevictable": 32}
_V2_MEM = {"anon": 1, "file": 2, "kernel_stack": 3, "slab": 4, "sock": 5, "shmem": 6, "file_mapped": 7,
           "file_dirty": 8, "file_writeback": 9, "anon_thp": 10, "inactive_anon": 11, "active_anon": 12,
           "inactive_file": 13, "active_file": 14, "unevictable": 15, "slab_reclaimable": 16,
           "slab_unreclaimable": 17, "pgfault": 18, "pgmajfault": 19}


# v1 BlkIOStat field numbers
_V1_BLKIO = {"io_service_bytes_recursive": 1, "io_serviced_recursive": 2, "io_queued_recursive": 3,
             "io_service_time_recursive": 4, "io_wait_time_recursive": 5, "io_merged_recursive": 6,
             "time_recursive": 7, "sectors_recursive": 8}


def _msg(num: int, body: bytes) -> bytes:
    return wire.enc_bytes(num, body, keep_empty=True)


def encode_v1(m: Metrics) -> bytes:
    pids = wire.enc_int(1, m.pids.current) + wire.enc_int(2, m.pids.limit)
    per_cpu = b"".join(wire.enc_varint(v) for v in m.cpu.per_cpu_ns)
    usage = (wire.enc_int(1, m.cpu.usage_ns) + wire.enc_int(2, m.cpu.system_ns) + wire.enc_int(3, m.cpu.user_ns)
             + (wire.enc_bytes(4, per_cpu) if per_cpu else b""))
    throttle = wire.enc_int(1, m.cpu.nr_periods) + wire.enc_int(2, m.cpu.nr_throttled) + wire.enc_int(3, m.cpu.throttled_ns)
    cpu = _msg(1, usage) + _msg(2, throttle)
    mem = b"".join(wire.enc_int(num, m.memory.stat.get(key, 0)) for key, num in _V1_MEM.items())
    mem += _msg(33, _entry(MemEntry(m.memory.limit, m.memory.usage, m.memory.max_usage, m.memory.failcnt)))
    for num, entry in ((34, m.memory.swap), (35, m.memory.kernel), (36, m.memory.kernel_tcp)):
        if entry is not None:  # only where the cgroup has the files, as containerd/cgroups does
            mem += _msg(num, _entry(entry))
    oom = wire.enc_int(3, m.memory.oom_kills)
    blkio = b"".join(wire.enc_bytes(_V1_BLKIO[name], _blkio_entry(e), keep_empty=True)
                     for name, entries in m.blkio.items() if name in _V1_BLKIO for e in entries)
    return _msg(2, pids) + _msg(3, cpu) + _msg(4, mem) + (_msg(5, blkio) if blkio else b"") + _msg(9, oom)


def _entry(e: MemEntry) -> bytes:
    return wire.enc_int(1, e.limit) + wire.enc_int(2, e.usage) + wire.enc_int(3, e.max) + wire.enc_int(4, e.failcnt)


def _blkio_entry(e: BlkioEntry) -> bytes:
    return (wire.enc_str(1, e.op) + wire.enc_str(2, e.device) + wire.enc_int(3, e.major) + wire.enc_int(4, e.minor)
            + wire.enc_int(5, e.value))


def encode_v2(m: Metrics) -> bytes:
    pids = wire.enc_int(1, m.pids.current) + wire.enc_int(2, m.pids.limit)
    cpu = (wire.enc_int(1, m.cpu.usage_ns // 1000) + wire.enc_int(2, m.cpu.user_ns // 1000)
           + wire.enc_int(3, m.cpu.system_ns // 1000) + wire.enc_int(4, m.cpu.nr_periods)
           + wire.enc_int(5, m.cpu.nr_throttled) + wire.enc_int(6, m.cpu.throttled_ns // 1000))
    mem = b"".join(wire.enc_int(num, m.memory.stat.get(key, 0)) for key, num in _V2_MEM.items())
    mem += (wire.enc_int(32, m.memory.usage) + wire.enc_int(33, m.memory.limit)
            + wire.enc_int(34, m.memory.swap_usage) + wire.enc_int(35, m.memory.swap_limit))
    events = wire.enc_int(5, m.memory.oom_kills)
    io = b"".join(wire.enc_bytes(1, wire.enc_int(1, e.major) + wire.enc_int(2, e.minor) + wire.enc_int(3, e.rbytes)
                                 + wire.enc_int(4, e.wbytes) + wire.enc_int(5, e.rios) + wire.enc_int(6, e.wios),
                                 keep_empty=True) for e in m.io)
    return _msg(1, pids) + _msg(2, cpu) + _msg(4, mem) + (_msg(6, io) if io else b"") + _msg(8, events)


def encode_metrics(m: Metrics) -> tuple[str, bytes]:
    """(type URL, serialized message) for a StatsResponse ``Any``."""
    return (V1_TYPE, encode_v1(m)) if m.version == 1 else (V2_TYPE, encode_v2(m))
