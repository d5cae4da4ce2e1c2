"""Build an OCI bundle (config.json + rootfs) around a Wasm module, for the standalone harness."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runwasm.shim.common.errors import InvalidArgumentError

DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)


# containerd's default capability set for containers (pkg/oci defaults)
DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
DEFAULT_MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
]
MASKED = ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"]
READONLY = ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def base_spec(args: Sequence[str], env: Sequence[str] = (), *, cwd: str = "/", terminal: bool = False,
              annotations: dict[str, str] | None = None, uid: int = 0, gid: int = 0) -> dict[str, Any]:
    """A runtime spec like containerd's defaults; ``root.path`` is "rootfs" in the bundle.

    The Linux-only parts (proc/sysfs/dev mounts, capabilities, masked paths) are ignored by the
    Wasm executor, so one spec serves both."""
    caps = list(DEFAULT_CAPS)
    return {
        "ociVersion": "1.0.2",
        "process": {"terminal": terminal, "user": {"uid": uid, "gid": gid}, "args": list(args),
                    "env": [*DEFAULT_ENV, *env], "cwd": cwd or "/",
                    "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                    "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "runwasm",
        "mounts": [dict(m) for m in DEFAULT_MOUNTS],
        "annotations": dict(annotations or {}),
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                  "maskedPaths": list(MASKED), "readonlyPaths": list(READONLY)},
    }


def parse_dir(text: str) -> tuple[str, str]:
    host, sep, guest = text.partition(":")
    if not sep or not host or not guest.startswith("/"):
        raise InvalidArgumentError(f"invalid --dir {text!r}: expected HOST:GUEST with an absolute GUEST path")
    if not os.path.isdir(host):
        raise InvalidArgumentError(f"invalid --dir {text!r}: host directory {host!r} does not exist")
    return os.path.abspath(host), guest


def make_wasm_bundle(bundle: Path, module: Path, args: Sequence[str], env: Sequence[str],
                     dirs: Sequence[tuple[str, str]] = (), annotations: dict[str, str] | None = None,
                     export: str | None = None) -> None:
    """Create ``bundle`` with the module copied to ``/<name>`` in its rootfs; ``args[0]`` is
    ``/<name>``, or ``/<name>#<export>`` to call a named export."""
    if not module.is_file():
        raise InvalidArgumentError(f"module {str(module)!r} does not exist or is not a file")
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(module, rootfs / module.name)
    arg0 = f"/{module.name}#{export}" if export else f"/{module.name}"
    spec = base_spec([arg0, *args], env, annotations=annotations)
    spec["mounts"] += [{"destination": g, "type": "bind", "source": h, "options": ["rbind", "rw"]} for h, g in dirs]
    (bundle / "config.json").write_text(json.dumps(spec))  # compact, as containerd writes it (and the C encoder)


def adopt_bundle(bundle: Path, source: Path, args: Sequence[str], env: Sequence[str],
                 annotations: dict[str, str] | None = None) -> None:
    """Create ``bundle`` from an existing one: config.json copied (rootfs made absolute).

    Raises:
        InvalidArgumentError: config.json is unreadable, not JSON or not a runtime spec (the
            message names the file and the JSON path, expected against got).
    """
    from runwasm.oci.runtime_spec import RuntimeSpec, SpecError

    path = source / "config.json"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InvalidArgumentError(f"invalid bundle {str(source)!r}: cannot read config.json: "
                                   f"{err.strerror or err}") from err
    try:
        RuntimeSpec.from_json(data, source=repr(str(path)))  # shape check: one clear line, early
        spec = json.loads(data)
    except SpecError as err:
        raise InvalidArgumentError(f"invalid bundle {str(source)!r}: {err}") from err
    root = spec["root"] = spec.get("root") or {"path": "rootfs"}  # shapes checked above; null = absent
    if not os.path.isabs(root.get("path") or "rootfs"):
        root["path"] = str((source / (root.get("path") or "rootfs")).resolve())
    proc = spec["process"] = spec.get("process") or {}
    if args:
        proc["args"] = [*(proc.get("args") or [])[:1], *args]
    if env:
        proc["env"] = [*(proc.get("env") or []), *env]
    if annotations:
        spec["annotations"] = {**(spec.get("annotations") or {}), **annotations}
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(spec))  # compact, as containerd writes it (and the C encoder)


def image_process(entrypoint: Sequence[str], cmd: Sequence[str], args: Sequence[str]) -> list[str]:
    """Docker/containerd semantics: Entrypoint + (args if given, else Cmd)."""
    out = [*entrypoint, *(args or cmd)]
    if not out:
        raise InvalidArgumentError("the image has no Entrypoint or Cmd and no arguments were given")
    return out


def parse_user(user: str) -> tuple[int, int]:
    """Numeric ``uid[:gid]`` from an image config; names would need the rootfs's /etc/passwd."""
    if not user:
        return 0, 0
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise InvalidArgumentError(f"image User {user!r} is not numeric uid[:gid]; only numeric users are supported")
    return int(uid), int(gid or 0)


def make_image_bundle(bundle: Path, process_args: Sequence[str], image_env: Sequence[str], env: Sequence[str],
                      cwd: str, user: str, dirs: Sequence[tuple[str, str]] = (),
                      annotations: dict[str, str] | None = None) -> None:
    """config.json for a rootfs prepared at ``<bundle>/rootfs`` from an image."""
    uid, gid = parse_user(user)
    spec = base_spec(process_args, [*image_env, *env], cwd=cwd or "/", annotations=annotations, uid=uid, gid=gid)
    spec["process"]["env"] = [*image_env, *env] if any(e.startswith("PATH=") for e in image_env) else spec["process"]["env"]
    spec["mounts"] += [{"destination": g, "type": "bind", "source": h, "options": ["rbind", "rw"]} for h, g in dirs]
    (bundle / "config.json").write_text(json.dumps(spec))  # compact, as containerd writes it (and the C encoder)
