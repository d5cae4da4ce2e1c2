"""Test images as OCI image-layout tarballs that ``ctr images import`` accepts.

``busybox_image`` is the ``mkimage.py`` of stack.md §6: one gzip'd layer holding the static
``/bin/busybox`` plus applet symlinks, one config, one manifest, and an ``index.json`` carrying
both ``io.containerd.image.name`` and ``org.opencontainers.image.ref.name``. Stdlib only, and
deterministic. ``pack_wasm_image`` goes through the user-facing ``runwasm image pack-wasm`` CLI.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import subprocess
import tarfile
from pathlib import Path

from tests.integration.daemon import venv_bin

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "true", "false", "echo", "cat", "sleep", "ls")
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _info(name: str, *, size: int = 0, mode: int = 0o755, kind: bytes = tarfile.REGTYPE,
          link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type, info.linkname = size, mode, kind, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
    return info


def _layer(busybox: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "dev", "etc", "proc", "sys", "tmp"):
            tar.addfile(_info(d, mode=0o1777 if d == "tmp" else 0o755, kind=tarfile.DIRTYPE))
        tar.addfile(_info("bin/busybox", size=len(busybox)), io.BytesIO(busybox))
        for applet in APPLETS:
            tar.addfile(_info(f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox"))
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, size=len(data), mode=0o644), io.BytesIO(data))


def busybox_image(out: Path, ref: str, busybox: Path = BUSYBOX) -> Path:
    """Write a linux/<host arch> busybox OCI layout tarball for ``ref`` to ``out``."""
    layer_tar = _layer(busybox.read_bytes())
    gz = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0) as f:
        f.write(layer_tar)
    layer = gz.getvalue()
    arch = GOARCH.get(platform.machine(), platform.machine())
    config = json.dumps({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _digest(layer), "size": len(layer)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": _digest(manifest), "size": len(manifest),
                       "platform": {"architecture": arch, "os": "linux"},
                       "annotations": {"io.containerd.image.name": ref,
                                       "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]}}],
    }, sort_keys=True).encode()
    with tarfile.open(out, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tar, "index.json", index)
        for blob in (layer, config, manifest):
            _add(tar, "blobs/sha256/" + _digest(blob).split(":", 1)[1], blob)
    return out


def pack_wasm_image(module: Path, out: Path, ref: str) -> str:
    """``runwasm image pack-wasm MODULE -o OUT --name REF``; returns the ref the CLI reports."""
    res = subprocess.run([str(venv_bin() / "runwasm"), "image", "pack-wasm", str(module), "-o", str(out),
                          "--name", ref], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"pack-wasm {module} failed ({res.returncode}): {res.stdout}{res.stderr}")
    reported: str = json.loads(res.stdout)["ref"]
    return reported
