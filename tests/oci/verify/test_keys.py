"""Key files and raw signatures, cross-checked against ``cryptography`` used directly."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from runwasm.oci.verify.errors import PolicyError
from runwasm.oci.verify.keys import load_private_key, load_public_key


@pytest.mark.parametrize("name", ["ec1", "ed1"])
def test_sign_and_verify_round_trip(keys: dict[str, tuple[Path, Path]], name: str) -> None:
    priv = load_private_key(keys[name][0])
    pub = load_public_key(keys[name][1], name)
    sig = priv.sign(b"payload")
    assert pub.verify(sig, b"payload")
    assert not pub.verify(sig, b"payload2")
    assert not pub.verify(sig[:-1] + bytes([sig[-1] ^ 1]), b"payload")
    assert pub.key_id == priv.public.key_id


def test_other_key_does_not_verify(keys: dict[str, tuple[Path, Path]]) -> None:
    sig = load_private_key(keys["ec1"][0]).sign(b"x")
    assert not load_public_key(keys["ec2"][1]).verify(sig, b"x")
    assert not load_public_key(keys["ed1"][1]).verify(sig, b"x")


def test_ecdsa_is_der_over_sha256_and_ed25519_is_pure(tmp_path: Path) -> None:
    """The encodings cosign uses, produced by cryptography directly, verify."""
    eck = ec.generate_private_key(ec.SECP256R1())
    edk = ed25519.Ed25519PrivateKey.generate()
    for key, sig in ((eck, eck.sign(b"m", ec.ECDSA(hashes.SHA256()))), (edk, edk.sign(b"m"))):
        path = tmp_path / "k.pub"
        path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
        assert load_public_key(path).verify(sig, b"m")


def test_sec1_private_key_is_read(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "k.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    assert load_private_key(path).algorithm == "ecdsa-p256"


def test_refusals(tmp_path: Path) -> None:
    rsa_pem = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "rsa.key").write_bytes(rsa_pem)
    with pytest.raises(PolicyError, match="RSAPrivateKey keys are not supported"):
        load_private_key(tmp_path / "rsa.key")
    (tmp_path / "cosign.key").write_text("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nx\n"
                                         "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    with pytest.raises(PolicyError, match="cosign's encrypted key format is not supported"):
        load_private_key(tmp_path / "cosign.key")
    (tmp_path / "junk.pub").write_text("junk")
    with pytest.raises(PolicyError, match="not a PEM SubjectPublicKeyInfo"):
        load_public_key(tmp_path / "junk.pub")
