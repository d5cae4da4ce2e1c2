"""Fuzz: the runtime-spec parser (``runwasm.oci.runtime_spec``) at the config.json boundary.

Properties: any JSON document, any valid spec with one field replaced by a random value (wrong
types, huge numbers, NaN-like floats, deep nesting), any bytes: the parser returns a
``RuntimeSpec`` or raises ``SpecError`` naming the source, never anything else, and the shim
maps that error to INVALID_ARGUMENT (3) once.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runwasm.oci.runtime_spec import RuntimeSpec, SpecError, parse_process
from runwasm.shim.common.errors import INVALID_ARGUMENT, to_status
from runwasm.shim.harness.bundle import base_spec

pytestmark = pytest.mark.fuzz

SOURCE = "'/fuzz/config.json'"
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**31, max_value=2**200),
                    st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=25)


def _base() -> dict[str, Any]:
    spec = base_spec(["/app.wasm", "x"], ["A=1"])
    spec["linux"].update({"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                          "resources": {"memory": {"limit": 1 << 20}, "cpu": {"shares": 2}},
                          "seccomp": {"defaultAction": "SCMP_ACT_ALLOW"}, "sysctl": {"net.ipv4.ip_forward": "1"},
                          "devices": [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]})
    spec["hooks"] = {"prestart": [{"path": "/bin/true", "args": ["true"], "timeout": 5}]}
    spec["process"]["user"]["additionalGids"] = [1, 2]
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 10}]
    return spec


BASE = _base()


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(BASE)[1:]


def _refusal(parse: Callable[[], object]) -> SpecError | None:
    """The SpecError ``parse`` raises, or None when it parses; anything else propagates."""
    try:
        parse()
    except SpecError as err:
        return err
    return None


def _check(data: bytes | str) -> None:
    err = _refusal(lambda: RuntimeSpec.from_json(data, source=SOURCE))
    if err is not None:
        assert SOURCE in str(err)
        assert to_status(err)[0] == INVALID_ARGUMENT


@given(json_values)
def test_any_json_document(doc: Any) -> None:
    _check(json.dumps(doc))


@given(st.sampled_from(PATHS), json_values)
def test_a_valid_spec_with_one_field_replaced(path: tuple[Any, ...], value: Any) -> None:
    doc = copy.deepcopy(BASE)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    _check(json.dumps(doc))
    err = _refusal(lambda: parse_process(json.dumps(doc["process"]), source=SOURCE))
    if err is not None:
        assert to_status(err)[0] == INVALID_ARGUMENT


@given(st.binary(max_size=200))
def test_any_bytes(data: bytes) -> None:
    _check(data)


@given(st.integers(1, 200_000), st.sampled_from(["[", '{"a":']), st.sampled_from(PATHS[:6]))
def test_deep_nesting_is_a_spec_error(depth: int, opener: str, path: tuple[Any, ...]) -> None:
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + "1" + closer * depth
    _check(nested)
    _check(json.dumps({str(path[0]): 0})[:-2] + nested + "}")


@pytest.mark.parametrize("depth", [100_000, 1_000_000])
def test_deep_nesting_pinned(depth: int) -> None:
    """Found by this suite: json.loads raised RecursionError (UNKNOWN, no file named) on deeply
    nested input instead of a SpecError naming config.json."""
    with pytest.raises(SpecError, match=r"'/fuzz/config.json': .*nested too deeply"):
        RuntimeSpec.from_json("[" * depth + "]" * depth, source=SOURCE)
    with pytest.raises(SpecError, match="nested too deeply"):
        parse_process('{"args":' + "[" * depth + "]" * depth + "}", source=SOURCE)
