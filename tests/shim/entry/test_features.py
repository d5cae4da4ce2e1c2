"""``-info`` carries the runtime-spec features document, and the document tells the truth:
every mount option it lists is one the executor parses, every seccomp action/arch/operator
compiles, and what runwasm does not do is not enabled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runwasm.linux.mounts import parse_options
from runwasm.shim.api.types import introspection_pb2
from runwasm.shim.entry import features

SHIM = Path(sys.executable).parent / "containerd-shim-runwasm-v1"


def _info() -> introspection_pb2.RuntimeInfo:
    out = subprocess.run([str(SHIM), "-info"], input=b"", capture_output=True, check=True, timeout=30)
    return introspection_pb2.RuntimeInfo.FromString(out.stdout)


def test_info_output_carries_the_features_document() -> None:
    info = _info()
    assert info.name == "io.containerd.runwasm.v1"
    assert info.HasField("features")
    assert info.features.type_url == "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
    doc = json.loads(info.features.value)
    assert doc == features.features()
    assert doc["ociVersionMin"] == "1.0.0"
    spec_recursive = {"rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev", "rnoexec", "rexec", "rnodiratime",
                      "rdiratime", "rrelatime", "rnorelatime", "rnoatime", "ratime", "rstrictatime",
                      "rnostrictatime", "rnosymfollow", "rsymfollow"}
    assert spec_recursive <= set(doc["mountOptions"])
    assert not {"tmpcopyup", "idmap", "ridmap"} & set(doc["mountOptions"])
    lin = doc["linux"]
    assert lin["mountExtensions"] == {"idmap": {"enabled": False}}
    assert (lin["apparmor"], lin["selinux"]) == ({"enabled": False}, {"enabled": False})
    assert lin["cgroup"]["systemd"] is False
    assert set(lin["namespaces"]) == {"cgroup", "ipc", "mount", "network", "pid", "user", "uts"}
    assert "CAP_SYS_ADMIN" in lin["capabilities"]


def test_lists_equal_the_tables_the_code_uses() -> None:
    from runwasm.linux.capabilities import NAMES
    from runwasm.linux.mounts import KNOWN_OPTIONS
    from runwasm.linux.seccomp import ACTIONS, ARCHES, OPERATORS

    assert features.MOUNT_OPTIONS == KNOWN_OPTIONS
    assert features.CAPABILITIES == NAMES
    assert sorted(features.SECCOMP_ACTIONS) == sorted(ACTIONS)
    assert sorted(features.SECCOMP_ARCHES) == sorted(ARCHES)
    assert sorted(features.SECCOMP_OPERATORS) == sorted(OPERATORS)


@pytest.mark.parametrize("option", features.features()["mountOptions"])
def test_every_listed_mount_option_is_understood(option: str) -> None:
    parse_options(["rbind", option], "bind", "mounts[0]")  # raises if not understood
    parse_options([option], "tmpfs", "mounts[0]")


def test_every_listed_seccomp_action_arch_and_operator_compiles() -> None:
    pytest.importorskip("pyseccomp")
    from runwasm.linux.seccomp import compile_filter

    sec = features.features()["linux"]["seccomp"]
    for arch in sec["archs"]:
        if arch == "SCMP_ARCH_S390X" and sys.byteorder == "little":
            continue  # libseccomp refuses mixing big- and little-endian arches in one filter
        compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [arch],
                        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]})
    for action in sec["actions"]:
        compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getcwd"], "action": action}]})
    for op in sec["operators"]:
        compile_filter({"defaultAction": "SCMP_ACT_ALLOW",
                        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
                                      "args": [{"index": 0, "value": 1, "valueTwo": 1, "op": op}]}]})


def test_info_stays_light() -> None:
    code = ("import sys, runwasm.shim.entry.info as i; i.run(b''); "
            "print(','.join(n for n in ('wasmtime', 'google.protobuf', 'pyseccomp', 'pyroute2', 'ctypes', "
            "'runwasm.linux.syscalls', 'runwasm.oci.runtime_spec') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ))
    assert out.stdout.strip() == ""
