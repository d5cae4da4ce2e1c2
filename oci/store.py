"""Digest-addressed content store (``<root>/content``).

Layout::

    <root>/content/blobs/sha256/<hex>   immutable blobs, named by the sha256 of their bytes
    <root>/content/ingest/<random>      in-flight writes (never visible as blobs)
    <root>/lock                         flock(2) serialising mutations (import, rm, gc)

Contract: ``ingest`` streams into ``ingest/``, hashes on the way, checks size and digest,
fsyncs, then renames into ``blobs/`` (atomic) and fsyncs the directory. A crash at any point
leaves at most an ingest file, which ``gc`` removes; a blob visible under ``blobs/`` always
matches its name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, BinaryIO

from runwasm.oci.digest import Digest
from runwasm.oci.errors import DigestMismatchError, InvalidArgumentError, NotFoundError

log = logging.getLogger(__name__)
CHUNK = 1 << 20
MAX_JSON_BLOB = 16 << 20


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that a rename or create inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ContentStore:
    """Blobs by digest under ``<root>/content``. Thread-unsafe; processes serialise with ``lock``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "content" / "blobs" / "sha256"
        self.ingest_dir = root / "content" / "ingest"
        for d in (self.blobs, self.ingest_dir):
            d.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store-wide exclusive lock (blocks until available)."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def path(self, digest: Digest) -> Path:
        if digest.algorithm != "sha256":
            raise InvalidArgumentError(f"failed to locate blob {str(digest)!r}: only sha256 is stored")
        return self.blobs / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError as err:
            raise NotFoundError(f"failed to stat blob {str(digest)!r}: not found") from err

    def open(self, digest: Digest) -> BinaryIO:
        """Open a blob for reading. Raises NotFoundError."""
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError as err:
            raise NotFoundError(f"failed to open blob {str(digest)!r}: not found") from err

    def read_bytes(self, digest: Digest, max_size: int = MAX_JSON_BLOB) -> bytes:
        """Read a small blob (manifest, config) and re-verify its digest."""
        with self.open(digest) as fh:
            data = fh.read(max_size + 1)
        if len(data) > max_size:
            raise InvalidArgumentError(f"failed to read blob {str(digest)!r}: larger than {max_size} bytes")
        got = Digest.of_bytes(data)
        if got != digest:
            raise DigestMismatchError(f"failed to read blob {str(digest)!r}: content hashes to {str(got)!r}")
        return data

    def ingest(self, src: IO[bytes], expected: Digest | None = None, expected_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> tuple[Digest, int]:
        """Stream ``src`` into the store, verify it, and publish it atomically.

        Returns:
            (digest, size) of the stored blob.

        Raises:
            DigestMismatchError: the bytes do not match ``expected`` / ``expected_size``;
                nothing is published and the ingest file is removed.
        """
        tmp = self.ingest_dir / secrets.token_hex(8)
        h = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "xb") as out:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    if expected_size is not None and size > expected_size:
                        break
                    if progress is not None:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            got = Digest.from_hasher(h)
            if expected_size is not None and size != expected_size:
                raise DigestMismatchError(
                    f"failed to ingest blob {str(expected or got)!r}: size mismatch: expected"
                    f" {expected_size} bytes, got {size}{'+' if size > expected_size else ''}")
            if expected is not None and got != expected:
                raise DigestMismatchError(
                    f"failed to ingest blob {str(expected)!r}: digest mismatch: content hashes to {str(got)!r}")
            os.chmod(tmp, 0o444)
            os.rename(tmp, self.path(got))
            fsync_dir(self.blobs)
            return got, size
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> Digest:
        import io
        return self.ingest(io.BytesIO(data))[0]

    def delete(self, digest: Digest) -> None:
        """Remove a blob. Raises NotFoundError when absent."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError as err:
            raise NotFoundError(f"failed to delete blob {str(digest)!r}: not found") from err

    def list(self) -> list[Digest]:
        out = []
        for p in sorted(self.blobs.iterdir()):
            try:
                out.append(Digest.parse(f"sha256:{p.name}"))
            except InvalidArgumentError:
                log.warning("ignoring stray file in content store: %r", str(p))
        return out

    def clean_ingest(self) -> int:
        """Remove leftovers of killed writes; call with ``lock()`` held. Returns the count."""
        n = 0
        for p in self.ingest_dir.iterdir():
            p.unlink(missing_ok=True)
            n += 1
        return n
