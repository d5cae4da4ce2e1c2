"""Modules a shim process imports only when something uses them (``install``).

``google.protobuf.internal.python_message`` is protobuf's pure-Python message implementation.
``descriptor_pool`` and ``internal.builder`` import it unconditionally, but with the upb
implementation (the wheel's C extension, what runwasm runs on) nothing of it is used: only a
pure-Python ``DescriptorPool`` and the Python implementation call into it. Importing it
(with ``text_format`` and ``decoder``/``encoder``, which it pulls in) was ~18 ms of the ~190 ms
of CPU the warm template spends importing before it can fork the first container's server
(docs/design.md, "The first container after boot, fourth pass"). Made lazy, it is a module
object whose code runs at its first attribute access: never, under upb; at once, under the
Python implementation (``message_factory`` uses it at import), so nothing changes there.

Only modules whose first use, if any, happens under the import lock or in one thread belong
here: CPython 3.11's ``LazyLoader`` does not lock the first access.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec, PathFinder
from types import ModuleType

LAZY = frozenset({"google.protobuf.internal.python_message"})


class _LazyFinder:
    """A ``sys.meta_path`` finder: the regular spec of a ``LAZY`` module, behind a ``LazyLoader``."""

    @staticmethod
    def find_spec(name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if name not in LAZY:
            return None
        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        from importlib.util import LazyLoader

        spec.loader = LazyLoader(spec.loader)
        return spec


def install() -> None:
    """Defer the ``LAZY`` modules to their first use in this process (and its forks). Idempotent;
    a module already imported stays as it is."""
    if _LazyFinder not in sys.meta_path:
        sys.meta_path.insert(0, _LazyFinder)
