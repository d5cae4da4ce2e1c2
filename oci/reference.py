"""Image references (``[domain/]path[:tag][@digest]``) normalised the way containerd/docker do.

``Reference.parse("hello")`` is ``docker.io/library/hello:latest``; a domain is recognised
when the first component contains ``.`` or ``:`` or is ``localhost``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runwasm.oci.digest import Digest
from runwasm.oci.errors import InvalidArgumentError

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DOMAIN = re.compile(r"^(?:[a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$")


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalised reference; ``str()`` gives ``domain/path:tag`` (plus ``@digest``)."""

    domain: str
    path: str
    tag: str = ""
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse and normalise; a reference without tag or digest gets ``:latest``.

        Raises:
            InvalidArgumentError: empty, upper-case path, bad tag/digest/domain.
        """
        rest = text
        digest = None
        if "@" in rest:
            rest, _, dtext = rest.partition("@")
            try:
                digest = Digest.parse(dtext)
            except InvalidArgumentError as err:
                raise InvalidArgumentError(f"failed to parse reference {text!r}: {err}") from err
        tag = ""
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1:]
            if not _TAG.match(tag):
                raise InvalidArgumentError(f"failed to parse reference {text!r}: invalid tag {tag!r}")
        if not rest:
            raise InvalidArgumentError(f"failed to parse reference {text!r}: empty name")
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            domain, path = first, remainder
            if not _DOMAIN.match(domain):
                raise InvalidArgumentError(f"failed to parse reference {text!r}: invalid domain {domain!r}")
        else:
            domain, path = DEFAULT_DOMAIN, rest
        if domain == DEFAULT_DOMAIN and "/" not in path:
            path = f"library/{path}"
        for comp in path.split("/"):
            if not _COMPONENT.match(comp):
                raise InvalidArgumentError(
                    f"failed to parse reference {text!r}: invalid path component {comp!r}"
                    " (lower-case letters, digits and separators only)")
        if not tag and digest is None:
            tag = DEFAULT_TAG
        return cls(domain, path, tag, digest)

    @property
    def name(self) -> str:
        """``domain/path`` without tag or digest."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out
