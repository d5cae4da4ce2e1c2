"""``WasmBackend.plan_init``: the payload it builds from the spec, the image layer and the sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runwasm.oci.runtime_spec import RuntimeSpec
from runwasm.shim.server.backends import WasmBackend
from runwasm.wasm.payload import WasmTaskPayload
from runwasm.wasm.sandbox import Preopen, Sandbox


def _spec(tmp_path: Path, annotations: dict[str, str] | None = None) -> RuntimeSpec:
    for d in ("rw", "ro"):
        (tmp_path / d).mkdir()
    doc: dict[str, Any] = {
        "ociVersion": "1.0.2", "root": {"path": "rootfs"}, "annotations": annotations or {},
        "process": {"args": ["/m.wasm"], "cwd": "/", "env": []},
        "mounts": [{"destination": "/w", "type": "bind", "source": str(tmp_path / "rw"), "options": ["rbind", "rw"]},
                   {"destination": "/r", "type": "bind", "source": str(tmp_path / "ro"), "options": ["rbind", "ro"]}]}
    return RuntimeSpec.from_json(doc)


def test_read_only_bind_mount_becomes_a_read_only_preopen(tmp_path: Path) -> None:
    backend = WasmBackend("c1", _spec(tmp_path), tmp_path / "rootfs", cgroups=False,
                          wasm_sandbox=Sandbox(preopens=(Preopen("/srv", "/data", readonly=False),)))
    p = WasmTaskPayload.from_json(backend.plan_init().payload["task"])
    assert p.preopens == ((str(tmp_path / "rw"), "/w"),)
    assert p.sandbox is not None
    assert Sandbox.from_json(p.sandbox).preopens == (Preopen(str(tmp_path / "ro"), "/r", True),
                                                     Preopen("/srv", "/data", False))


def test_allowed_annotation_reaches_the_payload(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"io.containerd.runwasm.v1.WasmFuel": "99"})
    backend = WasmBackend("c1", spec, tmp_path / "rootfs", cgroups=False,
                          wasm_sandbox=Sandbox(annotations=("WasmFuel",)))
    sandbox = WasmTaskPayload.from_json(backend.plan_init().payload["task"]).sandbox
    assert sandbox is not None
    assert Sandbox.from_json(sandbox).fuel == 99


@pytest.mark.parametrize(("linux", "field"), [
    ({"sysctl": {"net.ipv4.ip_forward": "1"}}, "linux.sysctl [('net.ipv4.ip_forward', '1')]"),
    ({"devices": [{"path": "/dev/x", "type": "c", "major": 1, "minor": 3}]}, "linux.devices ['/dev/x']"),
    ({"netDevices": {"eth1": {}}}, "linux.netDevices ['eth1']"),
])
def test_wasm_refuses_linux_only_fields(linux: dict[str, object], field: str) -> None:
    from runwasm.oci.runtime_spec import RuntimeSpec
    from runwasm.shim.common.errors import InvalidArgumentError
    from runwasm.shim.server.backends import refuse_linux_only

    spec = RuntimeSpec.from_json({"ociVersion": "1.2.0", "process": {"args": ["/m.wasm"]}, "linux": linux})
    with pytest.raises(InvalidArgumentError, match="cannot be honoured") as err:
        refuse_linux_only("c1", spec)
    assert f"Wasm container 'c1': {field} cannot be honoured" in str(err.value)
    ok = RuntimeSpec.from_json({"ociVersion": "1.2.0", "process": {"args": ["/m.wasm"]},
                                "linux": {"memoryPolicy": {"mode": "MPOL_LOCAL"}}})
    refuse_linux_only("c1", ok)  # what a Wasm task honours passes
