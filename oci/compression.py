"""Decompressing and hashing streams for layer blobs (gzip via zlib, zstd via ``zstandard``).

``zstandard`` is imported only when a zstd stream is opened, so importing this module is cheap.
zstd streams are read across frames, so skippable frames ("seekable" layouts) are handled.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from typing import IO, Any

from runwasm.oci.digest import Digest
from runwasm.oci.errors import InvalidArgumentError, OciError
from runwasm.oci.mediatypes import LayerKind


class HashingReader(io.RawIOBase):
    """Wrap a readable stream and hash (sha256) and count every byte read through it."""

    def __init__(self, inner: IO[bytes] | Any) -> None:
        super().__init__()
        self.inner = inner
        self.hasher = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self.inner.read(len(buf))
        n = len(data)
        buf[:n] = data
        self.hasher.update(data)
        self.count += n
        return n

    def drain(self) -> None:
        """Read (and hash) whatever is left, e.g. the tar's trailing zero blocks."""
        while self.read(1 << 20):
            pass

    @property
    def digest(self) -> Digest:
        return Digest.from_hasher(self.hasher)


class _CheckedReader(io.RawIOBase):
    """Turn decompressor failures (zlib, gzip CRC, zstd) into InvalidArgumentError."""

    def __init__(self, inner: Any, kind: LayerKind) -> None:
        super().__init__()
        self.inner = inner
        self.kind = kind

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        try:
            data = self.inner.read(len(buf))
        except OciError:
            raise
        except Exception as err:  # zlib.error, gzip.BadGzipFile, EOFError, zstandard.ZstdError
            raise InvalidArgumentError(f"failed to decompress {self.kind.value} layer: {err}") from err
        buf[:len(data)] = data
        return len(data)


def decompressed(src: IO[bytes], kind: LayerKind) -> IO[bytes]:
    """A stream of the uncompressed bytes of a layer blob of ``kind``; decompression errors
    surface as ``InvalidArgumentError``."""
    if kind in (LayerKind.TAR_GZIP,):
        return io.BufferedReader(_CheckedReader(gzip.GzipFile(fileobj=src, mode="rb"), kind), 1 << 16)
    if kind in (LayerKind.TAR_ZSTD, LayerKind.EROFS_ZSTD):
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
        return io.BufferedReader(_CheckedReader(reader, kind), 1 << 16)
    return src


def compress_zstd(src: IO[bytes], dst: IO[bytes], level: int = 3) -> None:
    import zstandard

    zstandard.ZstdCompressor(level=level).copy_stream(src, dst)
