"""Fixtures for tests/oci/verify: key pairs, a policy writer and a private docker-registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runwasm.oci.verify.keys import generate_key_pair
from tests.registry import LocalRegistry, registry_binary


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """{name: (private key path, public key path)}: two ECDSA P-256 keys and one Ed25519 key."""
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name, alg in (("ec1", "ecdsa-p256"), ("ec2", "ecdsa-p256"), ("ed1", "ed25519")):
        priv, pub = generate_key_pair(alg)
        (d / f"{name}.key").write_bytes(priv)
        (d / f"{name}.pub").write_bytes(pub)
        out[name] = (d / f"{name}.key", d / f"{name}.pub")
    return out


PolicyWriter = Callable[..., Path]


@pytest.fixture
def write_policy(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> PolicyWriter:
    """write_policy(match, key_names, unsigned='reject', extra='') -> policy path."""
    def write(match: str = "*", key_names: tuple[str, ...] = ("ec1",), unsigned: str = "reject",
              extra: str = "", default: str = "reject") -> Path:
        lines = ["version = 1", f'default = "{default}"']
        for name, (_, pub) in keys.items():
            lines += [f"[keys.{name}]", f'path = "{pub}"']
        lines += ["[[rules]]", f'match = "{match}"', f"keys = {list(key_names)!r}".replace("'", '"'),
                  f'unsigned = "{unsigned}"', extra]
        path = tmp_path / "policy.toml"
        path.write_text("\n".join(lines) + "\n")
        return path
    return write


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    if registry_binary() is None:
        pytest.skip("docker-registry not installed (Debian package docker-registry; scripts/install-system.sh)")
    reg = LocalRegistry()
    try:
        reg.start()
        yield reg
    finally:
        reg.close()
