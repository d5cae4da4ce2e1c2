"""Names the start path computes: the group a container belongs to and its socket address.

Containers of one group (a Kubernetes pod, or containers sharing the runwasm group
annotation) share one long-lived server. Every ``start`` computes the same socket path for the
same group, so a later ``start`` finds and reuses the running server (shim-protocol.md §4.4-4.5).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def _builtin_sha256() -> Callable[[bytes], Any]:
    """CPython's own SHA-256 (``_sha256``; ``_sha2`` from 3.12), else hashlib's: importing
    hashlib loads OpenSSL's libcrypto (~3 ms, which the first container after boot waits for in
    the template) for the start path's two short digests. Same digest either way."""
    import importlib

    for name in ("_sha256", "_sha2"):
        try:
            return importlib.import_module(name).sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    import hashlib

    return hashlib.sha256


_sha256 = _builtin_sha256()


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex (hashlib's result, without importing hashlib)."""
    return str(_sha256(data).hexdigest())

GROUP_ANNOTATIONS = ("io.containerd.runwasm.v1.group", "io.kubernetes.cri.sandbox-id")
RUNTIME_NAME = "io.containerd.runwasm.v1"


def group_id(annotations: Mapping[str, str], container_id: str) -> str:
    """The first grouping annotation present, else the container id."""
    for key in GROUP_ANNOTATIONS:
        value = annotations.get(key)
        if value:
            return value
    return container_id


def bundle_annotations(bundle: str) -> dict[str, str]:
    """Annotations of ``<bundle>/config.json`` without the full spec parser (start is hot)."""
    try:
        doc = json.loads(Path(bundle, "config.json").read_bytes())
    except (OSError, ValueError, RecursionError):  # Create reports a bad config.json, with its path
        return {}
    ann = doc.get("annotations") if isinstance(doc, dict) else None
    if not isinstance(ann, dict):
        return {}
    return {k: v for k, v in ann.items() if isinstance(k, str) and isinstance(v, str)}


def socket_path(socket_dir: str, grpc_address: str, namespace: str, group: str) -> str:
    """``<socket_dir>/<sha256 hex of join(grpc_address, namespace, group)>``, as upstream names it."""
    digest = sha256_hex(posixpath.join(grpc_address, namespace, group).encode())
    return posixpath.join(socket_dir, digest)
