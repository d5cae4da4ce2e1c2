"""The Stats encoders against the containerd/cgroups field numbers, decoded by real protobuf classes
built here from a descriptor of the relevant part of ``stats/v1`` and ``cgroup2/stats`` metrics.proto."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from runwasm.linux.stats import (
    UNLIMITED_V2,
    BlkioEntry,
    CpuStats,
    IoEntry,
    MemEntry,
    MemoryStats,
    Metrics,
    PidsStats,
)
from runwasm.shim.server.metrics import encode_v1, encode_v2

U64 = descriptor_pb2.FieldDescriptorProto.TYPE_UINT64
STR = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
MSG = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
REP = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
OPT = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL


def _classes(package: str, messages: dict[str, list[tuple[str, int, int, str, int]]]) -> dict[str, Any]:
    f = descriptor_pb2.FileDescriptorProto(name=f"{package}.test.proto", package=package, syntax="proto3")
    for name, fields in messages.items():
        m = f.message_type.add(name=name)
        for fname, num, ftype, type_name, label in fields:
            fd = m.field.add(name=fname, number=num, type=ftype, label=label)  # type: ignore[arg-type]
            if type_name:
                fd.type_name = f".{package}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{n}")) for n in messages}


V1 = _classes("v1", {
    "Metrics": [("memory", 4, MSG, "MemoryStat", OPT), ("blkio", 5, MSG, "BlkIOStat", OPT)],
    "MemoryStat": [("usage", 33, MSG, "MemoryEntry", OPT), ("swap", 34, MSG, "MemoryEntry", OPT),
                   ("kernel", 35, MSG, "MemoryEntry", OPT), ("kernel_tcp", 36, MSG, "MemoryEntry", OPT)],
    "MemoryEntry": [("limit", 1, U64, "", OPT), ("usage", 2, U64, "", OPT), ("max", 3, U64, "", OPT),
                    ("failcnt", 4, U64, "", OPT)],
    "BlkIOStat": [("io_service_bytes_recursive", 1, MSG, "BlkIOEntry", REP),
                  ("io_serviced_recursive", 2, MSG, "BlkIOEntry", REP)],
    "BlkIOEntry": [("op", 1, STR, "", OPT), ("device", 2, STR, "", OPT), ("major", 3, U64, "", OPT),
                   ("minor", 4, U64, "", OPT), ("value", 5, U64, "", OPT)],
})
V2 = _classes("v2", {
    "Metrics": [("memory", 4, MSG, "MemoryStat", OPT), ("io", 6, MSG, "IOStat", OPT)],
    "MemoryStat": [("usage", 32, U64, "", OPT), ("usage_limit", 33, U64, "", OPT), ("swap_usage", 34, U64, "", OPT),
                   ("swap_limit", 35, U64, "", OPT)],
    "IOStat": [("usage", 1, MSG, "IOEntry", REP)],
    "IOEntry": [("major", 1, U64, "", OPT), ("minor", 2, U64, "", OPT), ("rbytes", 3, U64, "", OPT),
                ("wbytes", 4, U64, "", OPT), ("rios", 5, U64, "", OPT), ("wios", 6, U64, "", OPT)],
})
LONG_MAX_PAGES = 9223372036854771712


def test_v1_unlimited_limit_kernel_swap_blkio() -> None:
    m = Metrics(1, CpuStats(), MemoryStats(usage=4096, limit=LONG_MAX_PAGES, swap=MemEntry(LONG_MAX_PAGES, 8192, 9000, 1),
                                           kernel=MemEntry(LONG_MAX_PAGES, 1024, 2048, 0)), PidsStats(),
                blkio={"io_service_bytes_recursive": (BlkioEntry("Read", "/dev/loop0", 7, 0, 512),)})
    got = V1["Metrics"].FromString(encode_v1(m))
    assert (got.memory.usage.limit, got.memory.usage.usage) == (LONG_MAX_PAGES, 4096)
    assert (got.memory.swap.limit, got.memory.swap.usage, got.memory.swap.max, got.memory.swap.failcnt) == \
        (LONG_MAX_PAGES, 8192, 9000, 1)
    assert (got.memory.kernel.usage, got.memory.kernel.max) == (1024, 2048)
    assert not got.memory.HasField("kernel_tcp")
    [entry] = got.blkio.io_service_bytes_recursive
    assert (entry.op, entry.device, entry.major, entry.minor, entry.value) == ("Read", "/dev/loop0", 7, 0, 512)


def test_v1_without_swap_kernel_blkio_leaves_them_unset() -> None:
    got = V1["Metrics"].FromString(encode_v1(Metrics(1, CpuStats(), MemoryStats(limit=1 << 20), PidsStats())))
    assert not got.memory.HasField("swap")
    assert not got.memory.HasField("kernel")
    assert not got.HasField("blkio")


def test_v2_max_and_io() -> None:
    m = Metrics(2, CpuStats(), MemoryStats(usage=1, limit=UNLIMITED_V2, swap_limit=UNLIMITED_V2), PidsStats(),
                io=(IoEntry(8, 0, 4096, 512, 2, 1),))
    got = V2["Metrics"].FromString(encode_v2(m))
    assert (got.memory.usage_limit, got.memory.swap_limit) == (UNLIMITED_V2, UNLIMITED_V2)
    [io] = got.io.usage
    assert (io.major, io.minor, io.rbytes, io.wbytes, io.rios, io.wios) == (8, 0, 4096, 512, 2, 1)
