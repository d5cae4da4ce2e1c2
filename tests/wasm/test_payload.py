"""``WasmTaskPayload`` round trip and validation."""

from __future__ import annotations

import json

import pytest

from runwasm.wasm.errors import STATUS_BY_KIND, InvalidPayloadError, WasmError
from runwasm.wasm.payload import WasmTaskPayload


def test_round_trip() -> None:
    p = WasmTaskPayload(
        rootfs="/r", args=("/m.wasm#f", "x"), env=("A=1",), cwd="/w",
        preopens=(("/h", "/g"),), cache_dir="/c", rootfs_readonly=True, module_file="/b/l.wasm",
        module_name="layer sha256:ab", precompiled_file="/b/k.cwasm",
    )
    data = p.to_json()
    assert json.loads(json.dumps(data)) == data
    assert WasmTaskPayload.from_json(data) == p
    assert WasmTaskPayload.from_json(json.dumps(data)) == p


def test_defaults() -> None:
    p = WasmTaskPayload.from_json({"rootfs": "/r", "args": ["/m.wasm"]})
    assert (p.env, p.cwd, p.preopens, p.cache_dir, p.rootfs_readonly) == ((), "/", (), None, False)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"args": ["/m"]}, "missing key 'rootfs'"),
        ({"rootfs": "r", "args": ["/m"]}, "rootfs must be absolute"),
        ({"rootfs": "/r", "args": []}, "args is empty"),
        ({"rootfs": "/r", "args": "/m"}, "args must be a list"),
        ({"rootfs": "/r", "args": ["/m"], "env": ["NOEQUALS"]}, "not K=V"),
        ({"rootfs": "/r", "args": ["/m"], "cwd": "rel"}, "cwd must be absolute"),
        ({"rootfs": "/r", "args": ["/m"], "preopens": [["/h"]]}, "preopen must be"),
        ({"rootfs": "/r", "args": ["/m"], "preopens": [["/h", "g"]]}, "two absolute paths"),
        ({"rootfs": "/r", "args": ["/m"], "cache_dir": 3}, "cache_dir must be"),
        ({"rootfs": "/r", "args": ["/m"], "module_file": "rel.wasm"}, "module_file must be absolute"),
        ({"rootfs": "/r", "args": ["/m"], "module_name": 1}, "module_name must be"),
        ({"rootfs": "/r", "args": ["/m"], "module_file": "/l.wasm", "precompiled_file": "k.cwasm"},
         "precompiled_file must be absolute"),
        ({"rootfs": "/r", "args": ["/m"], "precompiled_file": "/k.cwasm"}, "precompiled_file needs module_file"),
        ({"rootfs": "/r", "args": ["/m"], "rootfs_readonly": "yes"}, "must be a bool"),
        ({"rootfs": "/r", "args": ["/m"], "bogus": 1}, "unknown keys"),
        ("not json", "not JSON"),
        ([1], "expected an object"),
    ],
)
def test_invalid(data: object, match: str) -> None:
    with pytest.raises(InvalidPayloadError, match=match):
        WasmTaskPayload.from_json(data)  # type: ignore[arg-type]


def test_status_table_covers_every_error() -> None:
    def walk(cls: type[WasmError]) -> list[type[WasmError]]:
        return [cls, *(c for s in cls.__subclasses__() for c in walk(s))]

    assert set(STATUS_BY_KIND) == {c.__name__ for c in walk(WasmError)}
    assert STATUS_BY_KIND["ModuleNotFoundInRootfsError"] == "not_found"
    assert STATUS_BY_KIND["InvalidModuleError"] == "invalid_argument"
    assert STATUS_BY_KIND["LinkError"] == "failed_precondition"
