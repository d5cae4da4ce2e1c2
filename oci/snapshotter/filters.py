"""containerd filter expressions for ``Snapshots.List`` (containerd ``pkg/filters`` syntax).

A list of filters matches a snapshot when ANY filter matches; a filter is selectors joined by
``,`` that must ALL match. A selector is a field path, optionally followed by an operator and a
value: ``name==x``, ``parent!=y``, ``kind==committed``, ``labels."containerd.io/gc.root"``,
``labels.k~=^re``. Path components and values may be double-quoted (``\\"`` and ``\\\\`` escape).
Fields: ``name``, ``parent``, ``kind``, ``labels.<key>``. Anything else is refused with
``InvalidArgumentError`` rather than matched loosely.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from runwasm.oci.errors import InvalidArgumentError
from runwasm.oci.snapshotter.meta import Kind, Snapshot

OPERATORS = ("==", "!=", "~=")


@dataclass(frozen=True, slots=True)
class Selector:
    path: tuple[str, ...]
    op: str = ""  # "" = the field is present
    value: str = ""


def _scan_quoted(text: str, i: int, where: str) -> tuple[str, int]:
    out = []
    i += 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise InvalidArgumentError(f"invalid filter {where!r}: unterminated quote")


def parse_filter(text: str) -> list[Selector]:
    """One filter (selectors joined by ``,``)."""
    sels: list[Selector] = []
    i = 0
    while True:
        path: list[str] = []
        while True:  # field path
            if i < len(text) and text[i] == '"':
                comp, i = _scan_quoted(text, i, text)
            else:
                m = re.compile(r"[A-Za-z0-9_/\-]+").match(text, i)
                if not m:
                    raise InvalidArgumentError(f"invalid filter {text!r}: expected a field name at offset {i}")
                comp, i = m.group(0), m.end()
            path.append(comp)
            if i < len(text) and text[i] == ".":
                i += 1
                continue
            break
        op = value = ""
        if text.startswith(OPERATORS, i):
            op = text[i:i + 2]
            i += 2
            if i < len(text) and text[i] == '"':
                value, i = _scan_quoted(text, i, text)
            else:
                j = text.find(",", i)
                j = len(text) if j < 0 else j
                value, i = text[i:j], j
            if op == "~=":
                try:
                    re.compile(value)
                except re.error as err:
                    raise InvalidArgumentError(f"invalid filter {text!r}: bad regular expression: {err}") from err
        sels.append(Selector(tuple(path), op, value))
        if i == len(text):
            return sels
        if text[i] != ",":
            raise InvalidArgumentError(f"invalid filter {text!r}: unexpected {text[i]!r} at offset {i}")
        i += 1


def _field(snap: Snapshot, path: tuple[str, ...], where: str) -> str | None:
    if path == ("name",):
        return snap.key
    if path == ("parent",):
        return snap.parent
    if path == ("kind",):
        return snap.kind.name.lower()
    if len(path) >= 2 and path[0] == "labels":
        return snap.labels.get(".".join(path[1:]))
    raise InvalidArgumentError(f"invalid filter {where!r}: unknown field {'.'.join(path)!r}"
                               " (expected name, parent, kind or labels.<key>)")


def compile_filters(filters: Sequence[str]) -> Callable[[Snapshot], bool]:
    """A predicate for ``filters`` (empty: everything matches). Raises on a malformed filter."""
    parsed = [(f, parse_filter(f)) for f in filters if f]
    for f, sels in parsed:  # validate field names up front, not only on the first snapshot
        for s in sels:
            _field(Snapshot("", 0, Kind.VIEW), s.path, f)

    def match(snap: Snapshot) -> bool:
        if not parsed:
            return True
        for f, sels in parsed:
            if all(_matches(snap, s, f) for s in sels):
                return True
        return False

    return match


def _matches(snap: Snapshot, sel: Selector, where: str) -> bool:
    got = _field(snap, sel.path, where)
    if sel.op == "":
        return got is not None and (sel.path[0] == "labels" or got != "")
    if sel.op == "==":
        return got == sel.value
    if sel.op == "!=":
        return got != sel.value
    return got is not None and re.search(sel.value, got) is not None
