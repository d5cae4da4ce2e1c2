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
import sys
from typing import Any

HEADER = f"runwasm-dataclasses-v1 {sys.implementation.cache_tag} {sys.hexversion:x}".encode()

_codes: dict[str, bytes] = {}  # source text -> marshalled code object
_new: dict[str, bytes] = {}
_path = ""
hits = 0


def default_path() -> str:
    """Beside this module's own ``.pyc`` (``runwasm.__path__`` is no directory under an editable install)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__",
                        f"runwasm-dataclasses.{sys.implementation.cache_tag}.marshal")


def _load(path: str) -> dict[str, bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return {}
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    except OSError:
        return {}
    finally:
        os.close(fd)
    data = b"".join(chunks)
    head, sep, body = data.partition(b"\n")
    if head != HEADER or not sep:
        return {}
    try:
        doc = marshal.loads(body)
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, bytes) for k, v in doc.items()):
        return {}
    return doc


def _exec(source: Any, globals_: dict[str, Any] | None = None, locals_: Any = None) -> None:
    """``exec`` for ``dataclasses``: a cached code object for a known source text."""
    global hits
    if not isinstance(source, str):
        builtins.exec(source, globals_, locals_)
        return
    raw = _codes.get(source) or _new.get(source)
    if raw is not None:
        try:
            code = marshal.loads(raw)
            hits += 1
        except (EOFError, ValueError, TypeError):
            raw = None
    if raw is None:
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
    if _codes or _new:
        _codes = {}
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
    doc = {**_codes, **_new}
    tmp = f"{_path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(_path), mode=0o755, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            data = memoryview(HEADER + b"\n" + marshal.dumps(doc))
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
    _codes.update(_new)
    _new.clear()
    return True
