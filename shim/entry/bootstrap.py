"""Build the shim's settings from either start protocol (shim-protocol.md §4 and §5).

containerd 2.3 writes a binary ``BootstrapParams`` to ``start``'s stdin *and* still passes the
legacy flags and environment; 1.6-2.2 pass flags/env and an optional runtime-options ``Any`` on
stdin. A legacy ``Any`` (type_url=1, value=2) often decodes as ``BootstrapParams`` (1 =
instance_id, 2 = namespace), so the rule is the upstream one (§4.8): stdin is a 2.3 bootstrap
only if it decodes **and** ``instance_id == -id`` **and** ``namespace == -namespace`` **and**
``containerd_version`` is set (field 4 never appears in an ``Any``). Everything else is legacy.

The result is one frozen ``Settings`` passed down explicitly; only this module reads the
legacy environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from runwasm.shim.common import wire
from runwasm.shim.entry.flags import Flags

DEFAULT_SOCKET_DIR = "/run/containerd/s"
MAX_STDIN = 10 * 1024 * 1024
LOG_LEVEL_DEBUG = -4


@dataclass(frozen=True, slots=True)
class BootstrapParams:
    """containerd 2.x's ``BootstrapParams`` on ``start``'s stdin, decoded."""

    instance_id: str = ""
    namespace: str = ""
    log_level: int = 0
    containerd_version: str = ""
    containerd_ttrpc_address: str = ""
    containerd_grpc_address: str = ""
    containerd_binary: str = ""
    extensions: tuple[tuple[str, bytes], ...] = ()
    socket_dir: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the start path and the server need to know about their caller."""

    mode: str  # "bootstrap" (containerd 2.3+) or "legacy"
    namespace: str
    id: str
    bundle: str
    ttrpc_address: str  # containerd's ttrpc socket, a plain path ("" when unknown)
    grpc_address: str
    containerd_binary: str
    containerd_version: str
    debug: bool
    socket_dir: str
    options: tuple[str, bytes] | None  # runtime options Any (type_url, value)


def decode_params(data: bytes) -> BootstrapParams:
    """Decode ``BootstrapParams``; raises wire.WireError when the bytes do not fit."""
    f: dict[str, object] = {}
    exts: list[tuple[str, bytes]] = []
    for num, wt, v in wire.fields(data):
        if num in (1, 2, 4, 5, 6, 7, 9):
            name = {1: "instance_id", 2: "namespace", 4: "containerd_version", 5: "containerd_ttrpc_address",
                    6: "containerd_grpc_address", 7: "containerd_binary", 9: "socket_dir"}[num]
            f[name] = wire.expect_str(num, wt, v)
        elif num == 3:
            f["log_level"] = wire.expect_int(num, wt, v, signed=True)
        elif num == 8:
            ext = wire.expect_bytes(num, wt, v)
            for enum, ewt, ev in wire.fields(ext):
                if enum == 1:
                    exts.append(wire.dec_any(wire.expect_bytes(enum, ewt, ev)))
    return BootstrapParams(extensions=tuple(exts), **f)  # type: ignore[arg-type]


def encode_result(address: str, *, version: int = 3, protocol: str = "ttrpc") -> bytes:
    """Encode ``BootstrapResult`` (no trailing newline: containerd parses the raw bytes)."""
    return wire.enc_int(1, version) + wire.enc_str(2, address) + wire.enc_str(3, protocol)


def _strip_unix(addr: str) -> str:
    return addr[len("unix://"):] if addr.startswith("unix://") else addr


def detect(flags: Flags, stdin: bytes, env: Mapping[str, str], cwd: str) -> Settings:
    """Apply the §4.8 rule and return the settings for this start."""
    params: BootstrapParams | None = None
    if stdin:
        try:
            candidate = decode_params(stdin)
        except wire.WireError:
            candidate = None
        if (candidate is not None and candidate.instance_id == flags.id
                and candidate.namespace == flags.namespace and candidate.containerd_version):
            params = candidate
    bundle = flags.bundle or cwd
    if params is not None:
        options = params.extensions[0] if params.extensions else None
        return Settings(
            mode="bootstrap",
            namespace=params.namespace,
            id=params.instance_id,
            bundle=bundle,
            ttrpc_address=_strip_unix(params.containerd_ttrpc_address or env.get("TTRPC_ADDRESS", "")),
            grpc_address=params.containerd_grpc_address or flags.address,
            containerd_binary=params.containerd_binary or flags.publish_binary,
            containerd_version=params.containerd_version,
            debug=params.log_level <= LOG_LEVEL_DEBUG or flags.debug,
            socket_dir=params.socket_dir or DEFAULT_SOCKET_DIR,
            options=options,
        )
    options = None
    if stdin:
        try:
            type_url, value = wire.dec_any(stdin)
            options = (type_url, value) if type_url else None
        except wire.WireError:
            options = None  # not an Any: ignored, as upstream does
    return Settings(
        mode="legacy",
        namespace=flags.namespace or env.get("NAMESPACE", ""),
        id=flags.id,
        bundle=bundle,
        ttrpc_address=_strip_unix(env.get("TTRPC_ADDRESS", "")),
        grpc_address=flags.address or env.get("GRPC_ADDRESS", ""),
        containerd_binary=flags.publish_binary,
        containerd_version="",
        debug=flags.debug,
        socket_dir=env.get("RUNWASM_SOCKET_DIR", DEFAULT_SOCKET_DIR),
        options=options,
    )


def read_stdin(fd: int = 0) -> bytes:
    """Read all of stdin (at most 10 MiB, like upstream); a closed or absent stdin is empty."""
    chunks: list[bytes] = []
    total = 0
    while total < MAX_STDIN:
        try:
            b = os.read(fd, min(65536, MAX_STDIN - total))
        except OSError:
            break
        if not b:
            break
        chunks.append(b)
        total += len(b)
    return b"".join(chunks)
