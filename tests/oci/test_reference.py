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
    # containerd's ParseDockerRef rules
    ("demo/busybox:latest", "docker.io/demo/busybox:latest"),
    ("docker.io/demo/busybox:latest", "docker.io/demo/busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/demo/app:1", "docker.io/demo/app:1"),
    ("Registry/app", "Registry/app:latest"),
    ("busybox:1@sha256:" + "b" * 64, "docker.io/library/busybox@sha256:" + "b" * 64),
])
def test_normalise(text: str, want: str) -> None:
    assert str(Reference.parse(text)) == want


@pytest.mark.parametrize("text", ["", "Hello", "a/b:", "a@sha256:zz", "a:bad tag", "a" * 64, "./hello.wsam"])
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="failed to parse reference"):
        Reference.parse(text)


@pytest.mark.parametrize("text", ["busybox", "demo/busybox:latest", "docker.io/demo/busybox:latest",
                                  "index.docker.io/demo/busybox", "localhost:5000/a/b:c"])
def test_normalising_is_idempotent(text: str) -> None:
    once = str(Reference.parse(text))
    assert str(Reference.parse(once)) == once
