"""dm-verity hash trees in pure Python, byte-identical to ``veritysetup format`` (format 1).

Layout (containerd ``plugins/diff/erofs/dmverity_linux.go``): the tree is appended to the
image itself. ``hashoffset`` = image size rounded up to the data block size; a 512-byte
veritysetup superblock is written there (padded to one hash block), then the hash levels,
top level first. sha256, salt prepended to each hashed block (format 1), zero salt by default.
The sidecar ``<image>.dmverity`` holds ``{"roothash": hex, "hashoffset": bytes}`` as
containerd's does.

Activation needs device-mapper; ``activation_available()`` probes for it. When it is missing,
callers in strict mode raise ``UnavailableError`` (``require_activation``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from runwasm.oci.errors import InvalidArgumentError, UnavailableError

SIDECAR_SUFFIX = ".dmverity"
_SB = struct.Struct("<8sII16s32sIIQH6x256s168x")
assert _SB.size == 512


@dataclass(frozen=True, slots=True)
class VerityInfo:
    root_hash: str
    hash_offset: int
    data_blocks: int
    data_block_size: int
    hash_block_size: int
    salt: bytes
    uuid: str


def format_verity(image: Path, *, salt: bytes = bytes(32), uuid: str | None = None, block_size: int = 4096,
                  write_sidecar: bool = True) -> VerityInfo:
    """Append a verity superblock and hash tree to ``image`` and (optionally) write the sidecar.

    ``uuid`` defaults to a UUIDv5 over the image's data digest, for reproducible output.
    """
    size = image.stat().st_size
    if size == 0:
        raise InvalidArgumentError(f"failed to format verity for {str(image)!r}: empty image")
    data_blocks = (size + block_size - 1) // block_size
    hash_offset = data_blocks * block_size
    with open(image, "r+b") as fh:
        level0 = bytearray()
        whole = hashlib.sha256()
        for _ in range(data_blocks):
            block = fh.read(block_size)
            whole.update(block)
            if len(block) < block_size:
                block += bytes(block_size - len(block))
            level0 += hashlib.sha256(salt + block).digest()
        # Each level packs the digests of the level below into hash blocks, until a single
        # digest remains: that is the root (one data block -> no tree at all, as veritysetup).
        levels: list[bytes] = []
        digests = bytes(level0)
        while len(digests) > 32:
            packed = digests + bytes(-len(digests) % block_size)
            levels.append(packed)
            digests = b"".join(hashlib.sha256(salt + packed[off:off + block_size]).digest()
                               for off in range(0, len(packed), block_size))
        root = digests.hex()
        uid = uuid or str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"verity:sha256:{whole.hexdigest()}"))
        sb = _SB.pack(b"verity\0\0", 1, 1, uuidlib.UUID(uid).bytes, b"sha256", block_size, block_size,
                      data_blocks, len(salt), salt)
        fh.truncate(hash_offset)
        fh.seek(hash_offset)
        fh.write(sb + bytes(block_size - len(sb)))
        for level in reversed(levels):
            fh.write(level)
        fh.flush()
        os.fsync(fh.fileno())
    info = VerityInfo(root, hash_offset, data_blocks, block_size, block_size, salt, uid)
    if write_sidecar:
        write_sidecar_file(image, info)
    return info


def sidecar_path(image: Path) -> Path:
    return image.with_name(image.name + SIDECAR_SUFFIX)


def write_sidecar_file(image: Path, info: VerityInfo) -> Path:
    path = sidecar_path(image)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"roothash": info.root_hash, "hashoffset": info.hash_offset}))
    os.replace(tmp, path)
    return path


def read_sidecar(image: Path) -> tuple[str, int]:
    """(roothash, hashoffset) from the sidecar. Raises InvalidArgumentError when malformed."""
    path = sidecar_path(image)
    try:
        data = json.loads(path.read_text())
        return str(data["roothash"]), int(data["hashoffset"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InvalidArgumentError(f"failed to read verity sidecar {str(path)!r}: {err}") from err


def activation_available() -> bool:
    """containerd's test (``/sys/module/dm_verity``) plus a usable ``/dev/mapper/control``."""
    return os.path.isdir("/sys/module/dm_verity") and os.path.exists("/dev/mapper/control") and (
        shutil.which("veritysetup") is not None)


def require_activation(image: Path) -> None:
    """Strict mode: raise UnavailableError unless dm-verity devices can be created."""
    if not activation_available():
        raise UnavailableError(
            f"failed to activate dm-verity for {str(image)!r}: device-mapper verity is not available"
            " (no /sys/module/dm_verity or /dev/mapper/control, or no veritysetup); the kernel needs"
            " CONFIG_DM_VERITY")
