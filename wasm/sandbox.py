"""The configurable Wasm sandbox: engine features, limits, extra preopens, unknown imports.

Stdlib only: the shim parses it at ``start`` (runtime options) and at Create (annotations);
the workload applies it (``runwasm.wasm.engine.make_engine``, ``runwasm.wasm.task``).

Keys, as runtime options TOML keys (``shim/common/options.py``) and, where the operator lists them in
``WasmAnnotations``, as pod/container annotations ``io.containerd.runwasm.v1.<Key>`` (values as
text: ``true``/``false``, decimal integers, ``a,b`` lists, ``name=true,name=false`` tables)::

    WasmPreopens = ["/srv/data:/data:ro", "/var/scratch:/scratch:rw"]  # host:guest[:ro|rw], default ro
    WasmNetwork = false            # true: wasi:sockets with every address of the task's netns
                                   # (WASI 0.2 command components, run by ``wasmtime run``:
                                   # ``runwasm.wasm.cli_run``; no per-address allow-list exists)
    WasmFeatures = { gc = false, simd = true, custom-page-sizes = true }  # wasmtime proposals
    WasmMaxMemory = 67108864       # bytes, per linear memory (Store.set_limits memory_size)
    WasmMaxTableElements = 10000   # per table
    WasmMaxInstances = 10          # instances per store
    WasmFuel = 1000000000          # fuel units (~ one per Wasm instruction); out of fuel: trap, exit 134
    WasmUnknownImports = "error"   # "trap" (Linker.define_unknown_imports_as_traps), "default"
                                   # (as default values; core modules only)
    WasmExecutor = "auto"          # "auto": wasmtime-min runs the task's precompiled artifact
                                   # when it can express the task (``runwasm.wasm.min_run``), else
                                   # wasmtime-py in process; "inprocess": always wasmtime-py
                                   # (proc_exit codes 126..255 exact; the CLI exits 1 for them)
    WasmAnnotations = ["WasmUnknownImports", "WasmFuel"]  # which keys annotations may set

Refused, naming the key: unknown keys or feature names, wrong types, non-positive limits,
relative paths, and feature sets wasmtime 50 aborts the process on
(``reference-types = false``: its component-model-async needs it; ``simd = false`` without
``relaxed-simd = false``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from runwasm.wasm.errors import SandboxError

ANNOTATION_PREFIX = "io.containerd.runwasm.v1."
FEATURES: dict[str, str] = {
    "gc": "wasm_gc", "function-references": "wasm_function_references", "reference-types": "wasm_reference_types",
    "simd": "wasm_simd", "relaxed-simd": "wasm_relaxed_simd", "threads": "wasm_threads",
    "tail-call": "wasm_tail_call", "memory64": "wasm_memory64", "multi-memory": "wasm_multi_memory",
    "exceptions": "wasm_exceptions", "wide-arithmetic": "wasm_wide_arithmetic",
    "custom-page-sizes": "wasm_custom_page_sizes", "bulk-memory": "wasm_bulk_memory",
    "multi-value": "wasm_multi_value", "stack-switching": "wasm_stack_switching",
}
"""Feature name -> ``wasmtime.Config`` attribute."""
UNKNOWN_IMPORTS = ("error", "trap", "default")
EXECUTORS = ("auto", "inprocess")
LIMIT_KEYS = {"WasmMaxMemory": "max_memory", "WasmMaxTableElements": "max_table_elements",
              "WasmMaxInstances": "max_instances", "WasmFuel": "fuel"}
KEYS = ("WasmPreopens", "WasmNetwork", "WasmFeatures", *LIMIT_KEYS, "WasmUnknownImports", "WasmExecutor",
        "WasmAnnotations")


@dataclass(frozen=True, slots=True)
class Preopen:
    """A host directory the guest sees at ``guest`` (read-only unless ``readonly`` is False)."""

    host: str
    guest: str
    readonly: bool = True


@dataclass(frozen=True, slots=True)
class Sandbox:
    """The sandbox of one Wasm task (defaults: what runwasm did before it was configurable)."""

    preopens: tuple[Preopen, ...] = ()
    network: bool = False
    features: tuple[tuple[str, bool], ...] = ()  # sorted by name
    max_memory: int | None = None
    max_table_elements: int | None = None
    max_instances: int | None = None
    fuel: int | None = None
    unknown_imports: str = "error"
    annotations: tuple[str, ...] = ()  # keys annotations may set
    executor: str = "auto"

    @property
    def engine_fingerprint(self) -> str:
        """What of this sandbox changes compiled code (part of the compile cache key)."""
        feats = ",".join(f"{n}={int(v)}" for n, v in self.features)
        return f"features[{feats}];fuel={int(self.fuel is not None)}"

    def to_json(self) -> dict[str, Any]:
        return {"preopens": [[p.host, p.guest, p.readonly] for p in self.preopens], "network": self.network,
                "features": dict(self.features), "max_memory": self.max_memory,
                "max_table_elements": self.max_table_elements, "max_instances": self.max_instances,
                "fuel": self.fuel, "unknown_imports": self.unknown_imports, "executor": self.executor}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sandbox:
        """The workload side: the dict ``to_json`` made (validated again, cheaply)."""
        try:
            pre = tuple(Preopen(str(h), str(g), bool(ro)) for h, g, ro in data.get("preopens", []))
            out = cls(pre, bool(data.get("network", False)),
                      tuple(sorted((str(k), bool(v)) for k, v in dict(data.get("features", {})).items())),
                      data.get("max_memory"), data.get("max_table_elements"), data.get("max_instances"),
                      data.get("fuel"), str(data.get("unknown_imports", "error")),
                      executor=str(data.get("executor", "auto")))
        except (TypeError, ValueError) as err:
            raise SandboxError(f"invalid wasm payload: sandbox does not parse: {err}") from err
        return out.checked("wasm payload sandbox")

    def checked(self, where: str) -> Sandbox:
        """Self, after the cross-key checks (see module doc); raises SandboxError naming the key."""
        feats = dict(self.features)
        for name in feats:
            if name not in FEATURES:
                raise SandboxError(f"invalid WasmFeatures in {where}: unknown feature {name!r}; "
                                   f"expected some of {sorted(FEATURES)}")
        if feats.get("reference-types") is False:
            raise SandboxError(f"invalid WasmFeatures in {where}: reference-types = false is impossible with "
                               "wasmtime 50 (its component-model-async feature requires reference types)")
        if feats.get("simd") is False and feats.get("relaxed-simd") is not False:
            raise SandboxError(f"invalid WasmFeatures in {where}: simd = false needs relaxed-simd = false too "
                               "(relaxed SIMD builds on SIMD and is on by default)")
        for key, attr in LIMIT_KEYS.items():
            value = getattr(self, attr)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise SandboxError(f"invalid {key} in {where}: expected a positive integer, got {value!r}")
        if self.unknown_imports not in UNKNOWN_IMPORTS:
            raise SandboxError(f"invalid WasmUnknownImports in {where}: expected one of {list(UNKNOWN_IMPORTS)}, "
                               f"got {self.unknown_imports!r}")
        if self.executor not in EXECUTORS:
            raise SandboxError(f"invalid WasmExecutor in {where}: expected one of {list(EXECUTORS)}, "
                               f"got {self.executor!r}")
        for p in self.preopens:
            if not p.host.startswith("/") or not p.guest.startswith("/"):
                raise SandboxError(f"invalid WasmPreopens in {where}: {p.host}:{p.guest} must be two absolute paths")
        for key in self.annotations:
            if key not in KEYS or key == "WasmAnnotations":
                raise SandboxError(f"invalid WasmAnnotations in {where}: {key!r} is not a sandbox key; "
                                   f"expected some of {[k for k in KEYS if k != 'WasmAnnotations']}")
        return self


def _preopen(text: str, where: str) -> Preopen:
    parts = text.split(":")
    mode = parts.pop() if len(parts) == 3 else "ro"
    if len(parts) != 2 or mode not in ("ro", "rw"):
        raise SandboxError(f"invalid WasmPreopens in {where}: expected 'HOST:GUEST[:ro|rw]', got {text!r}")
    return Preopen(parts[0], parts[1], mode == "ro")


def _typed(key: str, value: object, typ: type, where: str) -> Any:
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise SandboxError(f"invalid {key} in {where}: expected {typ.__name__}, got {value!r}")
    return value


def from_toml(doc: Mapping[str, Any], where: str, base: Sandbox | None = None) -> Sandbox:
    """The sandbox keys of a parsed TOML document (others are the caller's), over ``base``."""
    out = base or Sandbox()
    for key, value in doc.items():
        if key == "WasmPreopens":
            items = _typed(key, value, list, where)
            out = replace(out, preopens=tuple(_preopen(_typed(key, v, str, where), where) for v in items))
        elif key == "WasmNetwork":
            out = replace(out, network=_typed(key, value, bool, where))
        elif key == "WasmFeatures":
            table = _typed(key, value, dict, where)
            feats = {str(k): _typed(f"{key}.{k}", v, bool, where) for k, v in table.items()}
            out = replace(out, features=tuple(sorted({**dict(out.features), **feats}.items())))
        elif key in LIMIT_KEYS:
            out = replace(out, **{LIMIT_KEYS[key]: _typed(key, value, int, where)})
        elif key == "WasmUnknownImports":
            out = replace(out, unknown_imports=_typed(key, value, str, where))
        elif key == "WasmExecutor":
            out = replace(out, executor=_typed(key, value, str, where))
        elif key == "WasmAnnotations":
            out = replace(out, annotations=tuple(_typed(key, v, str, where) for v in _typed(key, value, list, where)))
        else:
            raise SandboxError(f"unknown key {key!r} in {where}")
    return out.checked(where)


def _from_text(key: str, text: str, where: str) -> Any:
    """An annotation's text as the TOML value ``from_toml`` expects for ``key``."""
    if key in ("WasmNetwork",):
        if text not in ("true", "false"):
            raise SandboxError(f"invalid {key} in {where}: expected 'true' or 'false', got {text!r}")
        return text == "true"
    if key in LIMIT_KEYS:
        if not text.isdigit():
            raise SandboxError(f"invalid {key} in {where}: expected a decimal integer, got {text!r}")
        return int(text)
    if key == "WasmPreopens":
        return [t.strip() for t in text.split(",") if t.strip()]
    if key == "WasmFeatures":
        table: dict[str, bool] = {}
        for item in filter(None, (t.strip() for t in text.split(","))):
            name, sep, val = item.partition("=")
            if not sep or val not in ("true", "false"):
                raise SandboxError(f"invalid {key} in {where}: expected 'name=true|false,...', got {item!r}")
            table[name.strip()] = val == "true"
        return table
    return text


def with_annotations(base: Sandbox, annotations: Mapping[str, str]) -> Sandbox:
    """``base`` with the sandbox annotations of a container applied; an annotation for a sandbox
    key the runtime options do not list in ``WasmAnnotations`` is refused, naming it."""
    doc: dict[str, Any] = {}
    for name, text in sorted(annotations.items()):
        if not name.startswith(ANNOTATION_PREFIX + "Wasm"):
            continue
        key = name[len(ANNOTATION_PREFIX):]
        where = f"annotation {name}"
        if key not in KEYS or key == "WasmAnnotations":
            raise SandboxError(f"unknown sandbox annotation {name!r}; expected {ANNOTATION_PREFIX}<Key> with Key one of "
                               f"{[k for k in KEYS if k != 'WasmAnnotations']}")
        if key not in base.annotations:
            raise SandboxError(f"annotation {name!r} is not allowed: the runtime options' WasmAnnotations "
                               f"{list(base.annotations)} do not list {key!r}")
        doc[key] = _from_text(key, text, where)
    return from_toml(doc, "annotations", base) if doc else base
