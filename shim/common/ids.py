"""containerd's identifier rules (pkg/identifiers): at most 76 characters, alphanumeric runs
separated by single ``.``, ``_`` or ``-``."""

from __future__ import annotations

import re

from runwasm.shim.common.errors import InvalidArgumentError

MAX_LENGTH = 76
_RE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")


def validate_id(value: str, what: str = "identifier") -> None:
    if not value:
        raise InvalidArgumentError(f"invalid {what}: must not be empty")
    if len(value) > MAX_LENGTH:
        raise InvalidArgumentError(f"invalid {what} {value[:20]!r}...: longer than {MAX_LENGTH} characters")
    if not _RE.fullmatch(value):
        raise InvalidArgumentError(
            f"invalid {what} {value!r}: expected alphanumeric runs separated by single '.', '_' or '-'")
