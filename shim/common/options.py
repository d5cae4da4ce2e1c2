"""Runtime options: node-level configuration for runwasm, the way containerd passes it.

containerd hands a runtime's options to the shim as a ``runtimeoptions.v1.Options`` ``Any``
(shim-protocol.md §16): on ``start`` (2.3 bootstrap extension, or legacy stdin) and in every
``CreateTaskRequest.options``. ``config_body`` holds the TOML of the CRI runtime's ``options``
table; ``config_path`` names a TOML file (``ctr run --runtime-config-path``, or ``ConfigPath`` in
the CRI table). Keys (all optional)::

    Executor = "auto"            # "wasm" | "linux": route every container of this runtime there
    WasmCacheDir = "/var/lib/runwasm/wasm-cache"   # compile cache directory
    WasmRootfsReadonly = false   # preopen the rootfs read-only for Wasm guests
    Debug = false                # debug logging in the shim server (start options only)
    StandbySeconds = 0           # deprecated, no effect (logged): servers are forked from the
                                 # warm template (shim/template/)
    Wasm*                        # the Wasm sandbox: WasmPreopens, WasmFeatures, WasmMaxMemory,
                                 # WasmFuel, WasmUnknownImports, WasmAnnotations… (wasm/sandbox.py)

runc's options types (``containerd.runc.v1.Options``, ``containerd.linux.runc.CreateOptions``
and ``RuncOptions``, which ``ctr run --uidmap`` sends) are accepted field by field
(``shim/common/runc_options.py``): ``IoUid``/``IoGid`` are honoured (``io_uid``/``io_gid`` below),
fields runwasm cannot honour are refused when set. Anything else is an error that names what was
expected and what arrived: another options type, a TOML syntax error, an unknown key or a wrong
type. Parsed per container: Create's options override the server's start options.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from runwasm.shim.common import wire
from runwasm.shim.common.errors import InvalidArgumentError
from runwasm.wasm import sandbox as wasm_sandbox
from runwasm.wasm.errors import SandboxError

TYPE_URL = "runtimeoptions.v1.Options"
_KEYS = {"Executor": ("executor", str), "WasmCacheDir": ("wasm_cache_dir", str),
         "WasmRootfsReadonly": ("wasm_rootfs_readonly", bool), "Debug": ("debug", bool),
         "StandbySeconds": ("standby_seconds", int)}
MAX_STANDBY_SECONDS = 3600
EXECUTORS = ("auto", "wasm", "linux")


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """The runtime options of a container or a group, as parsed (defaults where unset)."""

    executor: str = "auto"
    wasm_cache_dir: str | None = None
    wasm_rootfs_readonly: bool = False
    debug: bool = False
    standby_seconds: int = 0
    wasm_sandbox: wasm_sandbox.Sandbox | None = None  # [wasm sandbox] None: defaults; given as a whole
    io_uid: int | None = None  # runc options IoUid/IoGid: owner of the stdio FIFOs
    io_gid: int | None = None

    def merged(self, other: RuntimeOptions | None, given: frozenset[str]) -> RuntimeOptions:
        """``other``'s explicitly given fields over ours."""
        if other is None:
            return self
        return replace(self, **{f.name: getattr(other, f.name) for f in fields(other) if f.name in given})


@dataclass(frozen=True, slots=True)
class ParsedOptions:
    """``RuntimeOptions`` and the names of the fields the document gave explicitly."""

    options: RuntimeOptions
    given: frozenset[str]  # field names the document set


def _decode_any_options(value: bytes) -> tuple[str, str]:
    config_path = config_body = ""
    for num, wt, v in wire.fields(value):
        if num == 2:
            config_path = wire.expect_str(num, wt, v)
        elif num == 3:
            config_body = wire.expect_str(num, wt, v)
    return config_path, config_body


def parse(any_: tuple[str, bytes] | None, *, source: str = "runtime options") -> ParsedOptions | None:
    """Parse an options ``Any`` (type URL, value); None when there are none."""
    if any_ is None or not any_[0]:
        return None
    type_url, value = any_
    name = type_url.rsplit("/", 1)[-1]
    from runwasm.shim.common import runc_options

    if name in runc_options.TYPES:
        ids = runc_options.parse(name, value, source)
        return ParsedOptions(RuntimeOptions(io_uid=ids.get("io_uid"), io_gid=ids.get("io_gid")), frozenset(ids))
    if name != TYPE_URL:
        raise InvalidArgumentError(f"unsupported {source} type {type_url!r}: expected {TYPE_URL} "
                                   f"(or one of runc's: {', '.join(runc_options.TYPES)})")
    try:
        config_path, body = _decode_any_options(value)
    except wire.WireError as err:
        raise InvalidArgumentError(f"invalid {source}: {TYPE_URL} does not decode: {err}") from err
    where = f"{source} config_body"
    if not body and config_path:
        where = f"{source} config_path {config_path!r}"
        try:
            body = Path(config_path).read_text()
        except OSError as err:
            raise InvalidArgumentError(f"failed to read {where}: {err.strerror}") from err
    return parse_toml(body, where)


def parse_toml(text: str, where: str) -> ParsedOptions:
    import tomllib  # here: ~3 ms at import, for options that most containers do not carry

    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InvalidArgumentError(f"invalid TOML in {where}: {err}") from err
    # --- [wasm sandbox] keys: parsed by runwasm.wasm.sandbox (stdlib only) ---
    sandbox_doc = {k: doc.pop(k) for k in list(doc) if k in wasm_sandbox.KEYS}
    values: dict[str, Any] = {}
    if sandbox_doc:
        try:
            values["wasm_sandbox"] = wasm_sandbox.from_toml(sandbox_doc, where)
        except SandboxError as err:
            raise InvalidArgumentError(str(err)) from err
    # --- end [wasm sandbox] ---
    unknown = sorted(set(doc) - set(_KEYS))
    if unknown:
        raise InvalidArgumentError(f"unknown keys in {where}: {unknown}; expected some of "
                                   f"{sorted([*_KEYS, *wasm_sandbox.KEYS])}")
    for key, raw in doc.items():
        name, typ = _KEYS[key]
        if not isinstance(raw, typ) or (typ is int and isinstance(raw, bool)):
            raise InvalidArgumentError(f"invalid {key} in {where}: expected {'an' if typ is int else 'a'} {typ.__name__}, got {raw!r}")
        values[name] = raw
    if values.get("executor", "auto") not in EXECUTORS:
        raise InvalidArgumentError(f"invalid Executor in {where}: expected one of {list(EXECUTORS)}, "
                                   f"got {values['executor']!r}")
    if "\x00" in values.get("wasm_cache_dir", ""):
        raise InvalidArgumentError(f"invalid WasmCacheDir in {where}: expected a path without NUL bytes, "
                                   f"got {values['wasm_cache_dir']!r}")
    if "wasm_cache_dir" in values and not values["wasm_cache_dir"].startswith("/"):
        raise InvalidArgumentError(f"invalid WasmCacheDir in {where}: expected an absolute path, "
                                   f"got {values['wasm_cache_dir']!r}")
    if not 0 <= values.get("standby_seconds", 0) <= MAX_STANDBY_SECONDS:
        raise InvalidArgumentError(f"invalid StandbySeconds in {where}: expected 0 to {MAX_STANDBY_SECONDS}, "
                                   f"got {values['standby_seconds']!r}")
    return ParsedOptions(RuntimeOptions(**values), frozenset(values))
