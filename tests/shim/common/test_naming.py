"""Group ids and socket names (shim-protocol.md §4.4-4.5)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from runwasm.shim.common.naming import bundle_annotations, group_id, socket_path

RUNWASM_GROUP = "io.containerd.runwasm.v1.group"
SANDBOX = "io.kubernetes.cri.sandbox-id"


def test_group_defaults_to_container_id() -> None:
    assert group_id({}, "c1") == "c1"
    assert group_id({"other": "x"}, "c1") == "c1"


def test_group_annotation_precedence() -> None:
    assert group_id({SANDBOX: "pod"}, "c1") == "pod"
    assert group_id({RUNWASM_GROUP: "g"}, "c1") == "g"
    assert group_id({RUNWASM_GROUP: "g", SANDBOX: "pod"}, "c1") == "g"


def test_empty_annotation_is_ignored() -> None:
    assert group_id({RUNWASM_GROUP: "", SANDBOX: "pod"}, "c1") == "pod"
    assert group_id({RUNWASM_GROUP: "", SANDBOX: ""}, "c1") == "c1"


def test_socket_path_is_sha256_of_joined_parts() -> None:
    expected = hashlib.sha256(b"/run/containerd/containerd.sock/default/c1").hexdigest()
    assert socket_path("/run/containerd/s", "/run/containerd/containerd.sock", "default", "c1") \
        == f"/run/containerd/s/{expected}"
    assert len(expected) == 64


def test_socket_path_differs_per_namespace_and_group() -> None:
    paths = {socket_path("/s", "/g", ns, grp) for ns in ("a", "b") for grp in ("x", "y")}
    assert len(paths) == 4


def test_bundle_annotations(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(
        {"annotations": {RUNWASM_GROUP: "g", "n": 1}, "process": {"args": ["/x"]}}))
    assert bundle_annotations(str(tmp_path)) == {RUNWASM_GROUP: "g"}


def test_bundle_annotations_missing_or_bad(tmp_path: Path) -> None:
    assert bundle_annotations(str(tmp_path)) == {}
    (tmp_path / "config.json").write_text("{not json")
    assert bundle_annotations(str(tmp_path)) == {}
    (tmp_path / "config.json").write_text('{"annotations": ["a"]}')
    assert bundle_annotations(str(tmp_path)) == {}
    (tmp_path / "config.json").write_text("[1]")
    assert bundle_annotations(str(tmp_path)) == {}


def test_annotations_of_a_too_deeply_nested_config_are_empty(tmp_path: Path) -> None:
    """``start`` must not crash on it (RecursionError is not a ValueError): Create reports it."""
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    assert bundle_annotations(str(tmp_path)) == {}


def test_the_start_path_names_sockets_without_loading_libcrypto() -> None:
    """hashlib loads OpenSSL's libcrypto (~3 ms the first container after boot waited for in the
    template); the socket names use CPython's own SHA-256, with the same digests."""
    import subprocess
    import sys

    code = """
import sys
from runwasm.shim.common import naming, node_handoff
import runwasm.shim.entry.start
name = naming.socket_path("/s", "/g", "ns", "grp")
key = node_handoff.node_key("install", "ns=1", {"a": 1}, {"RUNWASM_X": "1"})
assert "_hashlib" not in sys.modules and "hashlib" not in sys.modules, "hashlib was imported"
print(name, key)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.returncode == 0, out.stderr
    name, key = out.stdout.split()
    assert name == socket_path("/s", "/g", "ns", "grp")
    assert name == "/s/" + hashlib.sha256(b"/g/ns/grp").hexdigest()
    assert len(key) == 20
