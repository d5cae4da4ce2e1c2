"""The runtime-spec parser: every numeric field is range-checked at parse time, with an
InvalidArgument naming the JSON path, the value and the allowed range."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runwasm.oci.runtime_spec import RuntimeSpec, SpecError, parse_process, spec_to_json
from runwasm.shim.common.errors import INVALID_ARGUMENT, to_status

ID_MAX = 2**32 - 2


def spec(process: dict[str, Any] | None = None, linux: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"ociVersion": "1.0.2", "process": {"args": ["/x"], **(process or {})}, **top}
    if linux is not None:
        doc["linux"] = linux
    return doc


def refused(doc: dict[str, Any] | str | bytes) -> str:
    with pytest.raises(SpecError) as err:
        RuntimeSpec.from_json(doc, source="'b/config.json'")
    assert to_status(err.value)[0] == INVALID_ARGUMENT
    return str(err.value)


@pytest.mark.parametrize(("process", "linux", "path", "value", "allowed"), [
    ({"user": {"uid": -1}}, None, "process.user.uid", -1, "0..4294967294"),
    ({"user": {"uid": 2**40}}, None, "process.user.uid", 2**40, "0..4294967294"),
    ({"user": {"uid": 2**32 - 1}}, None, "process.user.uid", 2**32 - 1, "0..4294967294"),
    ({"user": {"gid": -1}}, None, "process.user.gid", -1, "0..4294967294"),
    ({"user": {"additionalGids": [1, 2**32]}}, None, "process.user.additionalGids[1]", 2**32, "0..4294967294"),
    ({"user": {"umask": 0o1000}}, None, "process.user.umask", 0o1000, "0..511"),
    ({"user": {"umask": -1}}, None, "process.user.umask", -1, "0..511"),
    ({"oomScoreAdj": 1001}, None, "process.oomScoreAdj", 1001, "-1000..1000"),
    ({"oomScoreAdj": -1001}, None, "process.oomScoreAdj", -1001, "-1000..1000"),
    ({"rlimits": [{"type": "RLIMIT_NOFILE", "soft": -1, "hard": 5}]}, None, "process.rlimits[0].soft", -1,
     "0..18446744073709551615"),
    ({"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2**64}]}, None, "process.rlimits[0].hard", 2**64,
     "0..18446744073709551615"),
    ({"consoleSize": {"height": 70000, "width": 80}}, None, "process.consoleSize.height", 70000, "0..65535"),
    (None, {"resources": {"memory": {"limit": -5}}}, "linux.resources.memory.limit", -5,
     "-1..9223372036854775807 (-1 = unlimited)"),
    (None, {"resources": {"memory": {"swappiness": 101}}}, "linux.resources.memory.swappiness", 101, "0..100"),
    (None, {"resources": {"cpu": {"quota": -2}}}, "linux.resources.cpu.quota", -2, "-1..9223372036854775807"),
    (None, {"resources": {"cpu": {"shares": -1}}}, "linux.resources.cpu.shares", -1, "0..18446744073709551615"),
    (None, {"resources": {"pids": {"limit": 2**63}}}, "linux.resources.pids.limit", 2**63,
     "-9223372036854775808..9223372036854775807"),
    (None, {"resources": {"blockIO": {"weight": 1001}}}, "linux.resources.blockIO.weight", 1001, "0..1000"),
    (None, {"resources": {"hugepageLimits": [{"pageSize": "2MB", "limit": -1}]}},
     "linux.resources.hugepageLimits[0].limit", -1, "0..18446744073709551615"),
    (None, {"resources": {"devices": [{"allow": True, "major": -2}]}}, "linux.resources.devices[0].major", -2,
     "-1..4294967295"),
    (None, {"uidMappings": [{"containerID": 0, "hostID": -1, "size": 1}]}, "linux.uidMappings[0].hostID", -1,
     "0..4294967295"),
    (None, {"devices": [{"path": "/dev/x", "type": "c", "uid": -1}]}, "linux.devices[0].uid", -1, "0..4294967294"),
    (None, {"devices": [{"path": "/dev/x", "type": "c", "fileMode": 0o10000}]}, "linux.devices[0].fileMode",
     0o10000, "0..4095"),
    (None, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}},
     "linux.seccomp.syscalls[0].args[0].index", 6, "0..5"),
    (None, {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1}}, "linux.seccomp.defaultErrnoRet",
     -1, "0..4294967295"),
])
def test_out_of_range_numbers_name_path_value_and_range(process: dict[str, Any] | None, linux: dict[str, Any] | None,
                                                        path: str, value: int, allowed: str) -> None:
    msg = refused(spec(process, linux))
    assert "'b/config.json'" in msg
    assert f"{path}: expected an integer in {allowed}" in msg
    assert msg.endswith(f"got {value}")


@pytest.mark.parametrize(("doc", "needle"), [
    (spec({"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]}),
     "process.rlimits[0].soft: expected at most the hard limit 5, got 10"),
    (spec({"rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]}), "process.rlimits[0].type: expected one of"),
    (spec({"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}, {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}]}),
     "process.rlimits[1].type: expected each rlimit type at most once"),
    (spec({"user": {"uid": True}}), "process.user.uid: expected an integer, got True"),
    (spec({"user": {"additionalGids": [False]}}), "process.user.additionalGids: expected an array of integers"),
    (spec(hooks={"prestart": [{"path": "/h", "timeout": 0}]}), "hooks.prestart[0].timeout: expected an integer in 1.."),
    (spec(linux={"resources": {"blockIO": {"weight": 5}}}), "linux.resources.blockIO.weight: expected an integer in 10..1000"),
    (spec(linux={"resources": {"memory": {"limit": "1G"}}}), "linux.resources.memory.limit: expected an integer, got '1G'"),
], ids=["soft-over-hard", "unknown-rlimit", "duplicate-rlimit", "bool-uid", "bool-gid", "hook-timeout",
        "blkio-weight-below-10", "string-limit"])
def test_other_numeric_shapes_are_refused(doc: dict[str, Any], needle: str) -> None:
    assert needle in refused(doc)


def test_limits_at_the_edges_are_accepted() -> None:
    doc = spec({"user": {"uid": ID_MAX, "gid": 0, "umask": 0o777, "additionalGids": [ID_MAX]}, "oomScoreAdj": -1000,
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 2**64 - 1, "hard": 2**64 - 1}]},
               {"resources": {"memory": {"limit": -1, "swap": -1}, "cpu": {"quota": -1, "shares": 2**64 - 1},
                              "pids": {"limit": -1}, "blockIO": {"weight": 0}}})
    parsed = RuntimeSpec.from_json(doc)
    assert parsed.process is not None
    assert parsed.process.user.uid == ID_MAX
    assert RuntimeSpec.from_json(spec_to_json(parsed)) == parsed


def test_exec_process_is_checked_too() -> None:
    with pytest.raises(SpecError, match=r"process\.user\.uid: expected an integer in 0\.\.4294967294, got -1"):
        parse_process({"args": ["/x"], "user": {"uid": -1}}, source="exec 'e1'")


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000])
def test_deeply_nested_json_is_invalid_argument_naming_the_file(tmp_path: Path, text: str) -> None:
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(SpecError) as err:
        RuntimeSpec.load(tmp_path)
    assert str(tmp_path / "config.json") in str(err.value)
    assert "nested too deeply" in str(err.value)
    assert to_status(err.value)[0] == INVALID_ARGUMENT
    with pytest.raises(SpecError, match="nested too deeply"):
        parse_process(text, source="exec 'e1'")


def test_resources_of_an_update_are_range_checked() -> None:
    from runwasm.linux.errors import InvalidArgumentError
    from runwasm.linux.resources import parse_resources

    with pytest.raises(InvalidArgumentError) as err:
        parse_resources({"memory": {"limit": -5}}, "resources")
    assert str(err.value).startswith("invalid resources: resources.memory.limit: expected an integer in -1..")
    assert to_status(err.value)[0] == INVALID_ARGUMENT
    assert json.dumps(parse_resources({"memory": {"limit": -1}}, "resources").memory_limit) == "-1"
