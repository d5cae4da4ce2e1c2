"""Key files and raw signatures (ECDSA P-256 with SHA-256, Ed25519), via ``cryptography``.

Public keys are PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo) files, the format of cosign's
``cosign.pub``. Private keys are unencrypted PEM PKCS#8 (``PRIVATE KEY``) or SEC1
(``EC PRIVATE KEY``) files; cosign's own encrypted ``ENCRYPTED SIGSTORE PRIVATE KEY`` files are
not read (``cosign import-key-pair`` goes the other way: it reads PKCS#8 keys).

Signature encodings follow cosign / sigstore-go: ECDSA signatures are ASN.1 DER over SHA-256
of the payload; Ed25519 signatures are the 64 raw bytes over the payload itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runwasm.oci.verify.errors import PolicyError

ECDSA_P256 = "ecdsa-p256"
ED25519 = "ed25519"


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A verification key; ``key_id`` is the sha256 of its DER SubjectPublicKeyInfo (hex)."""

    name: str
    algorithm: str
    key_id: str
    _key: Any

    def verify(self, signature: bytes, payload: bytes) -> bool:
        """True when ``signature`` is this key's signature over ``payload``."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            if self.algorithm == ECDSA_P256:
                self._key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            else:
                self._key.verify(signature, payload)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True, slots=True)
class PrivateKey:
    algorithm: str
    public: PublicKey
    _key: Any

    def sign(self, payload: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        if self.algorithm == ECDSA_P256:
            return bytes(self._key.sign(payload, ec.ECDSA(hashes.SHA256())))
        return bytes(self._key.sign(payload))


def _classify(key: Any, what: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if key.curve.name != "secp256r1":
            raise PolicyError(f"failed to load {what}: EC curve {key.curve.name!r}, expected P-256 (secp256r1)")
        return ECDSA_P256
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return ED25519
    raise PolicyError(f"failed to load {what}: {type(key).__name__} keys are not supported"
                      f" (expected ECDSA P-256 or Ed25519)")


def public_key_from_pem(data: bytes, name: str = "") -> PublicKey:
    """Parse a PEM ``PUBLIC KEY``. Raises PolicyError naming ``name``."""
    from cryptography.hazmat.primitives import serialization

    what = f"public key {name!r}"
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise PolicyError(f"failed to load {what}: not a PEM SubjectPublicKeyInfo: {err}") from err
    algorithm = _classify(key, what)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return PublicKey(name, algorithm, hashlib.sha256(der).hexdigest(), key)


def load_public_key(path: Path, name: str = "") -> PublicKey:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PolicyError(f"failed to load public key {name or str(path)!r} from {str(path)!r}: {err}") from err
    return public_key_from_pem(data, name or str(path))


def load_private_key(path: Path) -> PrivateKey:
    """Read an unencrypted PEM PKCS#8 / SEC1 private key. Raises PolicyError."""
    from cryptography.hazmat.primitives import serialization

    what = f"private key {str(path)!r}"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PolicyError(f"failed to load {what}: {err}") from err
    if b"ENCRYPTED SIGSTORE PRIVATE KEY" in data:
        raise PolicyError(f"failed to load {what}: cosign's encrypted key format is not supported;"
                          " use an unencrypted PKCS#8 PEM key (e.g. 'runwasm image keygen')")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise PolicyError(f"failed to load {what}: not an unencrypted PEM private key: {err}") from err
    algorithm = _classify(key, what)
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return PrivateKey(algorithm, public_key_from_pem(pub_pem, str(path)), key)


def generate_key_pair(algorithm: str) -> tuple[bytes, bytes]:
    """A new (private PKCS#8 PEM, public SPKI PEM) pair for ``ecdsa-p256`` or ``ed25519``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    key: Any
    if algorithm == ECDSA_P256:
        key = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == ED25519:
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise PolicyError(f"failed to generate key: algorithm {algorithm!r}, expected {ECDSA_P256!r} or {ED25519!r}")
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bytes(priv), bytes(pub)
