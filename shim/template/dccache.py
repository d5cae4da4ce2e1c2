"""Compiled dataclass methods, kept across template boots (the first container after boot waits
for the template's imports, ``shim/template/process.py``).

``@dataclass`` writes each generated method (``__init__``, ``__repr__``, ``__eq__``, the frozen
``__setattr__``...) as source text and compiles it with ``exec`` at import time: ~460 compiles
for the template's ``PRELOAD``, ~80 ms of its ~300 ms on this machine, paid again on every
boot because no ``.pyc`` holds them. While installed, ``dataclasses``' module-level ``exec``
name resolves to ``_exec`` here, which runs the code object compiled earlier from the very same
source text (the cache is keyed by the full text, so an edited class is simply a miss) and
compiles the rest exactly as ``exec`` would (file name ``<string>``, no inherited future flags:
``dataclasses`` has none). ``save`` adds the misses to the file.

The file is ``shim/template/__pycache__/runwasm-dataclasses.<cache_tag>.marshal``, beside the
``.pyc`` files and trusted as they are: loaded only when owned by this user and not writable by
group or others, and only for this interpreter (``sys.implementation.cache_tag`` and
``sys.hexversion`` in its header); anything else (missing, corrupt, foreign) is ignored and
rewritten. Written atomically (0644).
"""

from __future__ import annotations

import builtins
import marshal
import os
import struct
import sys
import zlib
from array import array
from bisect import bisect_left
from typing import Any

HEADER = f"runwasm-dataclasses-v2 {sys.implementation.cache_tag} {sys.hexversion:x}".encode()
_ENTRY = struct.Struct("<III")  # crc32 of the source text, offset and length of its record


class _Table:
    """The cache file's bytes, kept as one object: a sorted table of ``_ENTRY`` (count first), then
    the records, each ``marshal.dumps((source text, code object))``. One allocation, given back
    whole when dropped: a dict of ~460 strings and bytes objects left ~0.4 MiB of heap behind in
    the template, shared by every server forked from it."""

    def __init__(self, data: bytes = b"", start: int = 0) -> None:
        self.data = data
        self.start = start  # where the count is
        self.count = struct.unpack_from("<I", data, start)[0] if data else 0
        # the table as two arrays (two allocations, dropped with the table): the sorted crcs, for
        # a bisection in C, and every entry's three fields; a bisection over ``_entry`` in Python
        # was ~4 ms of the template's boot
        self._fields = array("I")
        self._crcs = array("I")
        begin, end = start + 4, start + 4 + self.count * _ENTRY.size
        if self.count and self._fields.itemsize * 3 == _ENTRY.size and end <= len(data):
            self._fields.frombytes(data[begin:end])
            if sys.byteorder != "little":
                self._fields.byteswap()
            self._crcs = self._fields[0::3]
        self._fast = len(self._crcs) == self.count  # else (a truncated file) entry by entry, as before

    def __len__(self) -> int:
        return self.count

    def _entry(self, i: int) -> tuple[int, int, int]:
        if self._fast:
            f = self._fields
            return f[3 * i], f[3 * i + 1], f[3 * i + 2]
        crc, off, n = _ENTRY.unpack_from(self.data, self.start + 4 + i * _ENTRY.size)
        return crc, off, n

    def _first(self, crc: int) -> int:
        """The index of the first entry with ``crc`` (or of where it would be)."""
        if self._fast:
            return bisect_left(self._crcs, crc)
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self._entry(mid)[0] < crc:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def get(self, source: str) -> Any:
        """The code object recorded for ``source``, or None."""
        crc = zlib.crc32(source.encode())
        lo = self._first(crc)
        while lo < self.count:
            got, off, n = self._entry(lo)
            if got != crc:
                return None
            record = marshal.loads(memoryview(self.data)[off:off + n])
            if record[0] == source:
                return record[1]
            lo += 1
        return None

    def records(self) -> dict[str, bytes]:
        out = {}
        for i in range(self.count):
            _crc, off, n = self._entry(i)
            src, code = marshal.loads(memoryview(self.data)[off:off + n])
            out[src] = marshal.dumps(code)
        return out


def encode(codes: dict[str, bytes]) -> bytes:
    """The file's bytes for ``codes`` (source text -> marshalled code object)."""
    records = sorted((zlib.crc32(src.encode()), marshal.dumps((src, marshal.loads(raw)))) for src, raw in codes.items())
    head = HEADER + b"\n"
    base = len(head) + 4 + _ENTRY.size * len(records)
    table, body, off = [], [], base
    for crc, rec in records:
        table.append(_ENTRY.pack(crc, off, len(rec)))
        body.append(rec)
        off += len(rec)
    return b"".join([head, struct.pack("<I", len(records)), *table, *body])


_codes = _Table()
_new: dict[str, bytes] = {}  # this run's misses: source text -> marshalled code object
_path = ""
hits = 0


def default_path() -> str:
    """Beside this module's own ``.pyc`` (``runwasm.__path__`` is no directory under an editable install)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__",
                        f"runwasm-dataclasses.{sys.implementation.cache_tag}.marshal")


def _load(path: str) -> _Table:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return _Table()
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return _Table()
        data = os.read(fd, st.st_size + 1)
    except OSError:
        return _Table()
    finally:
        os.close(fd)
    head, sep, _rest = data[:len(HEADER) + 1].partition(b"\n")
    if head != HEADER or not sep:
        return _Table()
    try:
        table = _Table(data, len(HEADER) + 1)
        if table.count:  # the table and the last record lie inside the file
            _crc, off, n = table._entry(table.count - 1)
            if off + n > len(data):
                return _Table()
        else:
            return table
        table.get("")  # reads one entry: a corrupt table fails here, not at the first class
    except (struct.error, EOFError, ValueError, TypeError, IndexError):
        return _Table()
    return table


def _exec(source: Any, globals_: dict[str, Any] | None = None, locals_: Any = None) -> None:
    """``exec`` for ``dataclasses``: a cached code object for a known source text."""
    global hits
    if not isinstance(source, str):
        builtins.exec(source, globals_, locals_)
        return
    code = None
    try:
        code = _codes.get(source)
    except (struct.error, EOFError, ValueError, TypeError, IndexError):
        code = None
    if code is not None:
        hits += 1
    elif source in _new:
        code = marshal.loads(_new[source])
    else:
        code = compile(source, "<string>", "exec", dont_inherit=True)
        _new[source] = marshal.dumps(code)
    builtins.exec(code, globals_, locals_)


def install(path: str | None = None) -> None:
    """Route ``dataclasses``' method compiles through the cache at ``path`` (``default_path()``)."""
    import dataclasses

    global _codes, _path, hits
    _path = path if path is not None else default_path()
    _codes = _load(_path)
    _new.clear()
    hits = 0
    dataclasses.exec = _exec  # type: ignore[attr-defined]  # shadows the builtin for that module only


def uninstall() -> None:
    """Give ``dataclasses`` its ``exec`` back and drop the cache (the template's memory, shared
    with every server forked after this)."""
    import dataclasses

    global _codes
    if getattr(dataclasses, "exec", None) is _exec:
        del dataclasses.exec  # type: ignore[attr-defined]
    if len(_codes) or _new:
        _codes = _Table()
        _new.clear()
        _trim()


def _trim() -> None:
    """Hand the freed cache (~0.6 MiB of malloc'd bytes objects) back to the kernel: glibc keeps
    freed heap pages resident, and every server forked later would count them in the template."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def save() -> bool:
    """Write the cache with this run's misses added (if any); False when it cannot be written
    (a read-only installation: every boot compiles, as without the cache)."""
    if not _new or not _path:
        return True
    try:
        doc = {**_codes.records(), **_new}
    except (struct.error, EOFError, ValueError, TypeError, IndexError):
        doc = dict(_new)
    tmp = f"{_path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(_path), mode=0o755, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            data = memoryview(encode(doc))
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
        os.rename(tmp, _path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    _new.clear()
    return True
