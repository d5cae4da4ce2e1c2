"""The spawn payload of a Wasm task: built by the shim, parsed by ``runwasm.wasm.child``.

Stdlib only (the shim imports it without wasmtime). ``to_json()`` returns the JSON-able dict
sent through the zygote; ``from_json()`` validates it and raises ``InvalidPayloadError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runwasm.wasm.errors import InvalidPayloadError


@dataclass(frozen=True, slots=True)
class WasmTaskPayload:
    """What a Wasm workload needs to set up and run one task.

    rootfs: absolute host path of the container rootfs directory; preopened as guest ``/``.
    args: ``process.args``; ``args[0]`` is the module's guest path, optionally ``path#export``.
        The guest's argv is ``args`` unchanged (``args[0]`` as given, ``#export`` included).
    env: ``process.env`` as ``"K=V"`` strings; given to the guest only, never applied to the
        workload process itself.
    cwd: ``process.cwd`` (absolute guest path). See ``runwasm.wasm.child`` for how it is honoured.
    preopens: extra ``(host dir, guest dir)`` pairs (bind mounts), absolute paths, in order.
    cache_dir: compile cache directory; None means ``$RUNWASM_WASM_CACHE`` or the default.
    rootfs_readonly: ``root.readonly`` from the spec; the ``/`` preopen is then read-only.
    module_file: absolute host path of the module to run instead of resolving ``args[0]``'s
        path in the rootfs (a Wasm layer of the image, ``runwasm.shim.server.image_module``); the
        ``#export`` part of ``args[0]`` still applies.
    module_name: how to name ``module_file`` in messages (e.g. the layer digest and image).
    precompiled_file: absolute host path of ``module_file``'s compiled artifact, written by the
        shim server from (or for) containerd's content store after verifying it
        (``runwasm.shim.server.image_cache``); deserialized instead of compiling. If it does not
        deserialize, the workload compiles ``module_file`` as without it.
    sandbox: ``runwasm.wasm.sandbox.Sandbox.to_json()`` (engine features, limits, fuel, extra
        preopens, unknown imports); None means the defaults.
    """

    rootfs: str
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    preopens: tuple[tuple[str, str], ...] = ()
    cache_dir: str | None = None
    rootfs_readonly: bool = False
    module_file: str | None = None
    module_name: str | None = None
    sandbox: dict[str, Any] | None = None
    precompiled_file: str | None = None

    def __post_init__(self) -> None:
        if not self.rootfs.startswith("/"):
            raise InvalidPayloadError(f"invalid wasm payload: rootfs must be absolute, got {self.rootfs!r}")
        if not self.args:
            raise InvalidPayloadError("invalid wasm payload: args is empty (process.args must name the module)")
        for item in self.env:
            if "=" not in item:
                raise InvalidPayloadError(f"invalid wasm payload: env entry {item!r} is not K=V")
        if not self.cwd.startswith("/"):
            raise InvalidPayloadError(f"invalid wasm payload: cwd must be absolute, got {self.cwd!r}")
        for name in ("module_file", "precompiled_file"):
            value = getattr(self, name)
            if value is not None and not value.startswith("/"):
                raise InvalidPayloadError(f"invalid wasm payload: {name} must be absolute, got {value!r}")
        if self.precompiled_file is not None and self.module_file is None:
            raise InvalidPayloadError("invalid wasm payload: precompiled_file needs module_file (the module it was "
                                      "compiled from)")
        for host, guest in self.preopens:
            if not host.startswith("/") or not guest.startswith("/"):
                raise InvalidPayloadError(
                    f"invalid wasm payload: preopen ({host!r}, {guest!r}) must be two absolute paths"
                )

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict that ``from_json`` turns back into an equal payload."""
        return {
            "rootfs": self.rootfs,
            "args": list(self.args),
            "env": list(self.env),
            "cwd": self.cwd,
            "preopens": [[h, g] for h, g in self.preopens],
            "cache_dir": self.cache_dir,
            "rootfs_readonly": self.rootfs_readonly,
            "module_file": self.module_file,
            "module_name": self.module_name,
            "sandbox": self.sandbox,
            "precompiled_file": self.precompiled_file,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | bytes) -> WasmTaskPayload:
        """Parse a dict (or its JSON text); unknown keys are an error, missing optional ones default."""
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data)
            except ValueError as err:
                raise InvalidPayloadError(f"invalid wasm payload: not JSON: {err}") from err
        if not isinstance(data, Mapping):
            raise InvalidPayloadError(f"invalid wasm payload: expected an object, got {type(data).__name__}")
        unknown = set(data) - set(cls.__slots__)
        if unknown:
            raise InvalidPayloadError(f"invalid wasm payload: unknown keys {sorted(unknown)!r}")
        try:
            rootfs = _str(data, "rootfs")
            args = _strs(data.get("args"), "args")
            env = _strs(data.get("env", []), "env")
            cwd = _str(data, "cwd", "/")
            raw_pre = data.get("preopens", [])
            if not isinstance(raw_pre, list | tuple):
                raise InvalidPayloadError(f"invalid wasm payload: preopens must be a list, got {raw_pre!r}")
            preopens = tuple(_pair(p) for p in raw_pre)
            cache_dir = data.get("cache_dir")
            if cache_dir is not None and not isinstance(cache_dir, str):
                raise InvalidPayloadError(f"invalid wasm payload: cache_dir must be a string, got {cache_dir!r}")
            readonly = data.get("rootfs_readonly", False)
            if not isinstance(readonly, bool):
                raise InvalidPayloadError(f"invalid wasm payload: rootfs_readonly must be a bool, got {readonly!r}")
            module_file = _opt_str(data, "module_file")
            module_name = _opt_str(data, "module_name")
            precompiled_file = _opt_str(data, "precompiled_file")
            sandbox = data.get("sandbox")
            if sandbox is not None and not isinstance(sandbox, dict):
                raise InvalidPayloadError(f"invalid wasm payload: sandbox must be an object, got {sandbox!r}")
        except KeyError as err:
            raise InvalidPayloadError(f"invalid wasm payload: missing key {err.args[0]!r}") from err
        return cls(rootfs, args, env, cwd, preopens, cache_dir, readonly, module_file, module_name, sandbox,
                   precompiled_file)


def _str(data: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = data[key] if default is None else data.get(key, default)
    if not isinstance(value, str):
        raise InvalidPayloadError(f"invalid wasm payload: {key} must be a string, got {value!r}")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidPayloadError(f"invalid wasm payload: {key} must be a string or null, got {value!r}")
    return value


def _strs(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidPayloadError(f"invalid wasm payload: {key} must be a list of strings, got {value!r}")
    return tuple(value)


def _pair(value: object) -> tuple[str, str]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, str) for v in value)
    ):
        raise InvalidPayloadError(f"invalid wasm payload: preopen must be [host, guest], got {value!r}")
    return value[0], value[1]
