"""Image references (``[domain/]path[:tag][@digest]``) normalised the way containerd/docker do.

The rules are containerd's (``reference/docker.ParseDockerRef``): ``Reference.parse("hello")``
is ``docker.io/library/hello:latest``, ``demo/app`` is ``docker.io/demo/app:latest``; the first
component is a domain when it contains ``.`` or ``:``, is ``localhost``, or has upper-case
letters; ``index.docker.io`` is ``docker.io``; a reference with both a tag and a digest keeps
only the digest (the digest is what is addressed); a bare 64-hex name is refused (it is an
image id, not a name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runwasm.oci.digest import Digest
from runwasm.oci.errors import InvalidArgumentError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
DEFAULT_TAG = "latest"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
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
        if _HEX64.match(rest):
            raise InvalidArgumentError(
                f"failed to parse reference {text!r}: a 64-hex string is an image id, not a name")
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
            domain, path = first, remainder
            if not _DOMAIN.match(domain):
                raise InvalidArgumentError(f"failed to parse reference {text!r}: invalid domain {domain!r}")
            if domain == LEGACY_DEFAULT_DOMAIN:
                domain = DEFAULT_DOMAIN
        else:
            domain, path = DEFAULT_DOMAIN, rest
        if domain == DEFAULT_DOMAIN and "/" not in path:
            path = f"library/{path}"
        for comp in path.split("/"):
            if not _COMPONENT.match(comp):
                raise InvalidArgumentError(
                    f"failed to parse reference {text!r}: invalid path component {comp!r}"
                    " (lower-case letters, digits and separators only)")
        if digest is not None:
            tag = ""  # tagged and digested: containerd addresses (and names) the digest only
        elif not tag:
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
