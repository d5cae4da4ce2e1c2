"""Sigstore bundles verified offline (sigstore-python) against a private trust root, through
runwasm's glue: identity, trust root, DSSE/in-toto statement naming the image digest."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runwasm.oci.digest import Digest
from runwasm.oci.image import Descriptor
from runwasm.oci.reference import Reference
from runwasm.oci.verify.bundle import verify_bundle
from runwasm.oci.verify.policy import Identity
from runwasm.oci.verify.registry import Registry
from runwasm.oci.verify.sign import push_bundle
from tests.conftest import built_fixture
from tests.integration.images import pack_wasm_image
from tests.oci.verify.sigstore_instance import PrivateSigstore
from tests.registry import LocalRegistry

D = Digest("sha256", "ab" * 32)
ISSUER, WHO = "https://issuer.example", "ci@example.com"


@pytest.fixture(scope="module")
def sigstore(tmp_path_factory: pytest.TempPathFactory) -> tuple[PrivateSigstore, Path]:
    s = PrivateSigstore()
    path = tmp_path_factory.mktemp("sigstore") / "trusted_root.json"
    path.write_bytes(s.trusted_root())
    return s, path


def _check(bundle: bytes, root: Path, digest: Digest = D, who: str = WHO, issuer: str = ISSUER) -> tuple[str, str]:
    return verify_bundle(bundle, digest, (Identity("t", issuer, who),), {"t": root})


def test_valid_bundle_is_accepted(sigstore: tuple[PrivateSigstore, Path]) -> None:
    s, root = sigstore
    problem, signer = _check(s.bundle(D.hex), root)
    assert problem == ""
    assert "ci@example.com" in signer


@pytest.mark.parametrize("case", ["other-digest", "other-identity", "other-issuer", "other-trust-root",
                                  "tampered-payload", "no-identities", "garbage"])
def test_refusals(sigstore: tuple[PrivateSigstore, Path], tmp_path: Path, case: str) -> None:
    s, root = sigstore
    bundle = s.bundle(D.hex)
    if case == "other-digest":
        problem, _ = _check(bundle, root, digest=Digest("sha256", "cd" * 32))
        assert "do not include this image's digest" in problem
    elif case == "other-identity":
        problem, _ = _check(bundle, root, who="mallory@example.com")
        assert "mallory@example.com" in problem
    elif case == "other-issuer":
        problem, _ = _check(bundle, root, issuer="https://other.example")
        assert "other.example" in problem
    elif case == "other-trust-root":
        other = tmp_path / "other.json"
        other.write_bytes(PrivateSigstore().trusted_root())
        problem, _ = _check(bundle, other)
        assert "certificate chain" in problem
    elif case == "tampered-payload":
        obj = json.loads(bundle)
        stmt = json.loads(base64.b64decode(obj["dsseEnvelope"]["payload"]))
        stmt["subject"][0]["digest"]["sha256"] = "cd" * 32
        obj["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
        problem, _ = _check(json.dumps(obj).encode(), root, digest=Digest("sha256", "cd" * 32))
        assert "DSSE: invalid signature" in problem
    elif case == "no-identities":
        problem, _ = verify_bundle(bundle, D, (), {})
        assert "lists no identities" in problem
    else:
        problem, _ = _check(b"{}", root)
        assert "not a valid Sigstore bundle" in problem


def test_bundle_referrer_through_runwasm_verify(sigstore: tuple[PrivateSigstore, Path], registry: LocalRegistry,
                                                tmp_path: Path) -> None:
    """A bundle attached as an OCI 1.1 referrer (fallback tag index on distribution 2.8) is found
    and verified by the containerd verifier executable, offline."""
    s, root = sigstore
    tar = tmp_path / "img.tar"
    ref = pack_wasm_image(built_fixture("wasm", "hello.wasm"), tar, f"{registry.host}/bundled:1")
    registry.push_archive(tar, "bundled:1")
    client = Registry(registry.host)
    fetched = client.get_manifest("bundled", "1")
    assert fetched is not None
    subject = Descriptor(fetched.media_type, fetched.digest, len(fetched.data))
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[trust_roots.t]\npath = "{root}"\n[[rules]]\nmatch = "{registry.host}/*"\n'
                      f'identities = [{{ trust_root = "t", issuer = "{ISSUER}", subject = "{WHO}" }}]\n')
    verifier = Path(sys.executable).parent / "runwasm-verify"

    def call() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(verifier), "-name", ref, "-digest", str(subject.digest)],
                              input=json.dumps(subject.to_json()), capture_output=True, text=True, timeout=60,
                              env={"RUNWASM_VERIFY_POLICY": str(policy), "PATH": "/usr/bin:/bin"})
    res = call()
    assert res.returncode == 1
    assert "not signed" in res.stdout
    push_bundle(client, Reference.parse(ref), subject, s.bundle("ee" * 32))  # a bundle for another image
    push_bundle(client, Reference.parse(ref), subject, s.bundle(subject.digest.hex))
    res = call()
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"signed by Sigstore identity '{WHO}'" in res.stdout
