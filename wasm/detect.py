"""Recognise Wasm inputs and parse the ``path#export`` entrypoint syntax.

Used by the shim's router, so it must stay free of the wasmtime import (stdlib only).

Binary formats (first 8 bytes):
    ``\\0asm`` + ``01 00 00 00``      core module (version 1)
    ``\\0asm`` + ``XX XX 01 00``      component (layer 1; version 0x0d today)
A ``\\0asm`` file with layer 0 and another version is still reported as ``"module"`` so that it
is routed to wasmtime, which then fails with a precise "unsupported version" message.

Text format: after an optional UTF-8 BOM, whitespace, ``;;`` line comments and (nested)
``(; ... ;)`` block comments, the text must start with ``(module`` or ``(component`` followed
by a delimiter. WAT that starts with bare module fields (``(func ...)``) is not recognised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Kind = Literal["module", "component", "wat"]
Flavour = Literal["module", "component"]

WASM_MAGIC = b"\0asm"
MODULE_VERSION = b"\x01\x00\x00\x00"
COMPONENT_LAYER = b"\x01\x00"
# How much of a file is read to find the leading s-expression of a WAT text.
SNIFF_BYTES = 64 * 1024

_WS = b" \t\r\n\f\v"
_DELIMS = _WS + b"()$;\""


def _skip_trivia(text: bytes, i: int) -> int | None:
    """Index of the first byte after whitespace/comments, or None if a block comment is open."""
    n = len(text)
    while i < n:
        c = text[i : i + 1]
        if c in (b" ", b"\t", b"\r", b"\n", b"\f", b"\v"):
            i += 1
        elif text.startswith(b";;", i):
            nl = text.find(b"\n", i)
            if nl < 0:
                return n
            i = nl + 1
        elif text.startswith(b"(;", i):
            depth, i = 1, i + 2
            while depth:
                if i >= n:
                    return None
                if text.startswith(b"(;", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith(b";)", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            return i
    return i


def wat_flavour(head: bytes) -> Flavour | None:
    """``"module"``/``"component"`` if ``head`` is WAT text starting with that form, else None."""
    i = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    j = _skip_trivia(head, i)
    if j is None or not head.startswith(b"(", j):
        return None
    j = _skip_trivia(head, j + 1)
    if j is None:
        return None
    for word in ("module", "component"):
        end = j + len(word)
        if head.startswith(word.encode(), j) and (end == len(head) or head[end : end + 1] in _DELIMS):
            return "module" if word == "module" else "component"
    return None


def classify_bytes(head: bytes) -> Kind | None:
    """Classify the first bytes of a file (pass at least 8, ideally ``SNIFF_BYTES``)."""
    if head.startswith(WASM_MAGIC):
        if len(head) < 8:
            return None
        if head[6:8] == COMPONENT_LAYER:
            return "component"
        return "module"
    return "wat" if wat_flavour(head) is not None else None


def classify(path: Path) -> Kind | None:
    """Classify the file at ``path`` (a host path) by content, never by extension.

    Returns ``"module"`` (core Wasm binary), ``"component"`` (component binary), ``"wat"``
    (text starting with ``(module`` or ``(component``) or None for anything else, including
    directories and other special files. Raises ``OSError`` if the file cannot be opened.
    """
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    return classify_bytes(head)


def parse_entrypoint(arg0: str) -> tuple[str, str | None]:
    """Split ``args[0]`` on the first ``#`` into (module path, export name or None).

    Follows runwasi: ``"/app.wasm#entry"`` -> ``("/app.wasm", "entry")``; ``"/app.wasm"`` ->
    ``("/app.wasm", None)`` (the default export: ``_start`` or ``wasi:cli/run``); an empty
    export (``"/app.wasm#"``) means the default too; ``"#init"`` -> ``("", "init")`` (an empty
    path, which runwasi uses for modules from OCI Wasm layers). No validation is done here.
    """
    path, sep, export = arg0.partition("#")
    return path, (export or None) if sep else None
