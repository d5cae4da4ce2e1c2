"""Build an OCI bundle (config.json + rootfs) around a Wasm module, for the standalone harness."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runwasm.shim.errors import InvalidArgumentError

DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)


def base_spec(args: Sequence[str], env: Sequence[str] = (), *, cwd: str = "/", terminal: bool = False,
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A minimal runtime spec; ``root.path`` is "rootfs" relative to the bundle."""
    return {
        "ociVersion": "1.0.2",
        "process": {"terminal": terminal, "user": {"uid": 0, "gid": 0}, "args": list(args),
                    "env": [*DEFAULT_ENV, *env], "cwd": cwd},
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "runwasm",
        "mounts": [],
        "annotations": dict(annotations or {}),
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]},
    }


def parse_dir(text: str) -> tuple[str, str]:
    host, sep, guest = text.partition(":")
    if not sep or not host or not guest.startswith("/"):
        raise InvalidArgumentError(f"invalid --dir {text!r}: expected HOST:GUEST with an absolute GUEST path")
    if not os.path.isdir(host):
        raise InvalidArgumentError(f"invalid --dir {text!r}: host directory {host!r} does not exist")
    return os.path.abspath(host), guest


def make_wasm_bundle(bundle: Path, module: Path, args: Sequence[str], env: Sequence[str],
                     dirs: Sequence[tuple[str, str]] = (), annotations: dict[str, str] | None = None) -> None:
    """Create ``bundle`` with the module copied to ``/<name>`` in its rootfs."""
    if not module.is_file():
        raise InvalidArgumentError(f"module {str(module)!r} does not exist or is not a file")
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(module, rootfs / module.name)
    spec = base_spec([f"/{module.name}", *args], env, annotations=annotations)
    spec["mounts"] = [{"destination": g, "type": "bind", "source": h, "options": ["rbind", "rw"]} for h, g in dirs]
    (bundle / "config.json").write_text(json.dumps(spec, indent=2))


def adopt_bundle(bundle: Path, source: Path, args: Sequence[str], env: Sequence[str],
                 annotations: dict[str, str] | None = None) -> None:
    """Create ``bundle`` from an existing one: config.json copied (rootfs made absolute)."""
    try:
        spec = json.loads((source / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise InvalidArgumentError(f"invalid bundle {str(source)!r}: cannot read config.json: {err}") from err
    root = spec.setdefault("root", {"path": "rootfs"})
    if not os.path.isabs(root.get("path", "rootfs")):
        root["path"] = str((source / root.get("path", "rootfs")).resolve())
    proc = spec.setdefault("process", {})
    if args:
        proc["args"] = [*proc.get("args", [])[:1], *args]
    if env:
        proc["env"] = [*proc.get("env", []), *env]
    if annotations:
        spec.setdefault("annotations", {}).update(annotations)
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(spec, indent=2))
