from __future__ import annotations

import pytest

from runwasm.oci.errors import InvalidArgumentError
from runwasm.oci.reference import Reference


@pytest.mark.parametrize(("text", "want"), [
    ("hello", "docker.io/library/hello:latest"),
    ("hello:v1", "docker.io/library/hello:v1"),
    ("user/app", "docker.io/user/app:latest"),
    ("localhost/app:1", "localhost/app:1"),
    ("registry.example.com:5000/a/b:c", "registry.example.com:5000/a/b:c"),
    ("ghcr.io/x/y@sha256:" + "a" * 64, "ghcr.io/x/y@sha256:" + "a" * 64),
])
def test_normalise(text: str, want: str) -> None:
    assert str(Reference.parse(text)) == want


@pytest.mark.parametrize("text", ["", "Hello", "a/b:", "a@sha256:zz", "a:bad tag"])
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="failed to parse reference"):
        Reference.parse(text)
