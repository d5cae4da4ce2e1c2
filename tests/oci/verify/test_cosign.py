"""cosign's formats: what ``runwasm image sign`` writes is byte-for-byte the documented format,
and a signature built by hand from cosign's documentation verifies."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from runwasm.oci.digest import Digest
from runwasm.oci.errors import InvalidArgumentError
from runwasm.oci.image import Descriptor, Manifest
from runwasm.oci.reference import Reference
from runwasm.oci.verify import cosign
from runwasm.oci.verify.keys import load_private_key, load_public_key
from runwasm.oci.verify.sign import sign_layer

D = Digest("sha256", "ab" * 32)


def test_tags() -> None:
    assert cosign.sig_tag(D) == f"sha256-{'ab' * 32}.sig"
    assert cosign.referrers_tag(D) == f"sha256-{'ab' * 32}"
    assert cosign.signed_digest_of_tag(cosign.sig_tag(D)) == D
    assert cosign.signed_digest_of_tag("latest") is None


def test_payload_is_cosigns_documented_bytes() -> None:
    expected = ('{"critical":{"identity":{"docker-reference":"reg.example/app"},'
                f'"image":{{"docker-manifest-digest":"sha256:{"ab" * 32}"}},'
                '"type":"cosign container image signature"},"optional":null}').encode()
    assert cosign.make_payload("reg.example/app", D) == expected
    parsed = cosign.SimpleSigning.parse(expected)
    assert (parsed.docker_reference, parsed.manifest_digest, parsed.type) == ("reg.example/app", D, cosign.PAYLOAD_TYPE)
    with_opt = cosign.SimpleSigning.parse(cosign.make_payload("r/a", D, {"git": "abc"}))
    assert with_opt.optional == {"git": "abc"}


@pytest.mark.parametrize(("payload", "message"), [
    (b"[]", "expected object"),
    (b'{"critical":{"identity":{"docker-reference":"r"},"type":"t"}}', "docker-manifest-digest: missing"),
    (b'{"critical":{"image":{"docker-manifest-digest":"sha256:zz"},"identity":{"docker-reference":"r"},"type":"t"}}',
     "failed to parse digest"),
])
def test_bad_payloads(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        cosign.SimpleSigning.parse(payload)


def test_sig_manifest_shape(keys: dict[str, tuple[Path, Path]]) -> None:
    layer = sign_layer(load_private_key(keys["ec1"][0]), Reference.parse("reg.example/app:1"), D)
    built = cosign.build_sig_manifest([layer])
    m = json.loads(built.manifest.data)
    assert m["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert m["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    (lay,) = m["layers"]
    assert lay["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert lay["digest"] == str(Digest.of_bytes(layer.payload))
    sig = base64.b64decode(lay["annotations"]["dev.cosignproject.cosign/signature"])
    assert load_public_key(keys["ec1"][1]).verify(sig, layer.payload)
    config = json.loads(next(b.data for b in built.blobs if b.media_type == m["config"]["mediaType"]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [lay["digest"]]}
    assert Manifest.from_json(built.manifest.data).layers[0].digest == Digest.of_bytes(layer.payload)


def test_referrer_manifest_shape(keys: dict[str, tuple[Path, Path]]) -> None:
    layer = sign_layer(load_private_key(keys["ed1"][0]), Reference.parse("reg.example/app:1"), D)
    subject = Descriptor("application/vnd.oci.image.manifest.v1+json", D, 123)
    m = json.loads(cosign.build_referrer_manifest([layer], subject).manifest.data)
    assert m["artifactType"] == "application/vnd.dev.cosign.artifact.sig.v1+json"
    assert m["subject"] == {"mediaType": subject.media_type, "digest": str(D), "size": 123}
    assert m["config"] == {"mediaType": "application/vnd.oci.empty.v1+json",
                           "digest": str(Digest.of_bytes(b"{}")), "size": 2}


def test_hand_built_cosign_signature_verifies() -> None:
    """A signature made from cosign's docs alone (not runwasm's signer) is accepted by the checks."""
    from cryptography.hazmat.primitives import serialization

    from runwasm.oci.verify.keys import public_key_from_pem
    from runwasm.oci.verify.policy import Policy, Rule
    from runwasm.oci.verify.verifier import Candidate, _check_key_signature

    key = ec.generate_private_key(ec.SECP256R1())
    payload = json.dumps({"critical": {"identity": {"docker-reference": "r.example/a"},
                                       "image": {"docker-manifest-digest": str(D)},
                                       "type": "cosign container image signature"},
                          "optional": {"creator": "hand"}}, indent=1).encode()  # any JSON layout is signed as is
    sig = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    pub = public_key_from_pem(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo), "k")
    policy = Policy("p", "reject", (Rule("*", keys=("k",)),), {"k": pub}, {}, {})
    assert _check_key_signature(Candidate("hand", payload, sig), policy.rules[0], policy, D) == ""
    other = Digest("sha256", "cd" * 32)
    assert "payload signs digest" in _check_key_signature(Candidate("hand", payload, sig), policy.rules[0], policy, other)
