"""Content digests (``sha256:<64 hex>``).

Only sha256 is accepted for content this package stores or writes; sha512 digests parse (the
image-spec allows them) so that error messages can name them, but ``hasher()`` supports both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from runwasm.oci.errors import InvalidArgumentError

_HEX_LEN = {"sha256": 64, "sha512": 128}
_RE = re.compile(r"^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-f0-9]+)$")


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """A validated content digest; ``str(d)`` is the ``algorithm:hex`` form."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``algorithm:hex``.

        Raises:
            InvalidArgumentError: malformed, unknown algorithm or wrong hex length.
        """
        m = _RE.match(text)
        if m is None:
            raise InvalidArgumentError(f"failed to parse digest {text!r}: expected 'sha256:<hex>'")
        algorithm, hexpart = m.group(1), m.group(2)
        want = _HEX_LEN.get(algorithm)
        if want is None:
            raise InvalidArgumentError(
                f"failed to parse digest {text!r}: unsupported algorithm {algorithm!r}")
        if len(hexpart) != want:
            raise InvalidArgumentError(
                f"failed to parse digest {text!r}: expected {want} hex digits, got {len(hexpart)}")
        return cls(algorithm, hexpart)

    @classmethod
    def of_bytes(cls, data: bytes) -> Digest:
        import hashlib  # here: a server that never checks a digest does not load libcrypto (~3 ms)

        return cls("sha256", hashlib.sha256(data).hexdigest())

    @classmethod
    def from_hasher(cls, h: Any) -> Digest:
        return cls(h.name, h.hexdigest())

    def hasher(self) -> Any:
        """A fresh hashlib object of this digest's algorithm."""
        import hashlib

        return hashlib.new(self.algorithm)

    def short(self) -> str:
        return self.hex[:12]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
