"""Typed field access over decoded JSON, with errors that name the JSON path.

The image and runtime-spec parsers use these helpers so that no raw dict escapes a parser.
Every failure is a ``JsonFieldError`` (an ``InvalidArgumentError``) whose message starts with
the dotted path of the offending field, e.g. ``layers[0].digest: missing``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from runwasm.oci.errors import InvalidArgumentError

JsonObject = Mapping[str, Any]


class JsonFieldError(InvalidArgumentError):
    """A field is missing or has the wrong type; ``path`` is the dotted JSON path."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def loads_object(data: bytes | str) -> JsonObject:
    """Decode a JSON document that must be an object."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise JsonFieldError("$", f"invalid JSON: {err}") from err
    return as_object(value, "$")


def as_object(value: object, path: str) -> JsonObject:
    if not isinstance(value, dict):
        raise JsonFieldError(path, f"expected object, got {_type_name(value)}")
    return value


def req(obj: JsonObject, key: str, path: str) -> Any:
    if key not in obj or obj[key] is None:
        raise JsonFieldError(join(path, key), "missing")
    return obj[key]


def req_str(obj: JsonObject, key: str, path: str) -> str:
    value = req(obj, key, path)
    if not isinstance(value, str):
        raise JsonFieldError(join(path, key), f"expected string, got {_type_name(value)}")
    return value


def opt_str(obj: JsonObject, key: str, path: str, default: str = "") -> str:
    if obj.get(key) is None:
        return default
    return req_str(obj, key, path)


def req_int(obj: JsonObject, key: str, path: str) -> int:
    value = req(obj, key, path)
    if isinstance(value, bool) or not isinstance(value, int):
        raise JsonFieldError(join(path, key), f"expected integer, got {_type_name(value)}")
    return value


def opt_object(obj: JsonObject, key: str, path: str) -> JsonObject:
    if obj.get(key) is None:
        return {}
    return as_object(obj[key], join(path, key))


def opt_list(obj: JsonObject, key: str, path: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise JsonFieldError(join(path, key), f"expected array, got {_type_name(value)}")
    return value


def opt_str_list(obj: JsonObject, key: str, path: str) -> tuple[str, ...]:
    items = opt_list(obj, key, path)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise JsonFieldError(join(join(path, key), i), f"expected string, got {_type_name(item)}")
    return tuple(items)


def opt_str_map(obj: JsonObject, key: str, path: str) -> dict[str, str]:
    value = opt_object(obj, key, path)
    for k, v in value.items():
        if not isinstance(v, str):
            raise JsonFieldError(join(join(path, key), k), f"expected string, got {_type_name(v)}")
    return dict(value)


def dumps_canonical(value: object) -> bytes:
    """Serialise deterministically (sorted keys, compact separators, UTF-8)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
