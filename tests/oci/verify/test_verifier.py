"""The judgement (``judge``) over an in-memory signature source: one layer, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from runwasm.oci.digest import Digest
from runwasm.oci.errors import UnavailableError
from runwasm.oci.reference import Reference
from runwasm.oci.verify import cosign
from runwasm.oci.verify.errors import VerificationError
from runwasm.oci.verify.keys import load_private_key
from runwasm.oci.verify.policy import load_policy
from runwasm.oci.verify.sign import sign_layer
from runwasm.oci.verify.verifier import Candidate, Found, judge, require
from tests.oci.verify.conftest import PolicyWriter

NAME = "reg.example/app:1"
D = Digest("sha256", "12" * 32)
OTHER = Digest("sha256", "34" * 32)
Keys = dict[str, tuple[Path, Path]]


@dataclass
class FakeSource:
    found: Found
    error: Exception | None = None

    def find(self, ref: Reference, digest: Digest) -> Found:
        if self.error is not None:
            raise self.error
        return self.found


def _cand(keys: dict[str, tuple[Path, Path]], key: str, digest: Digest = D) -> Candidate:
    layer = sign_layer(load_private_key(keys[key][0]), Reference.parse(NAME), digest)
    return Candidate(f"sig by {key}", layer.payload, layer.signature_b64)


def test_signed_by_listed_key_is_accepted(write_policy: PolicyWriter, keys: Keys) -> None:
    j = judge(load_policy(write_policy("reg.example/*", ("ec2", "ed1"))), NAME, D,
              FakeSource(Found((_cand(keys, "ed1"),))))
    assert j.ok
    assert not j.warning
    assert "signed by key 'ed1' (ed25519" in j.reason
    assert str(D) in j.reason


def test_unsigned_is_refused_or_warned(write_policy: PolicyWriter) -> None:
    j = judge(load_policy(write_policy()), NAME, D, FakeSource(Found(())))
    assert not j.ok
    assert "not signed" in j.reason
    assert NAME in j.reason
    assert str(D) in j.reason
    j = judge(load_policy(write_policy(unsigned="warn")), NAME, D, FakeSource(Found(())))
    assert j.ok
    assert j.warning
    assert "WARNING" in j.reason


def test_bad_signature_is_refused_even_when_unsigned_warns(write_policy: PolicyWriter, keys: Keys) -> None:
    j = judge(load_policy(write_policy(unsigned="warn")), NAME, D, FakeSource(Found((_cand(keys, "ec2"),))))
    assert not j.ok
    assert "sig by ec2: signature does not verify with key(s) ['ec1']" in j.reason


def test_signature_of_another_digest_is_refused(write_policy: PolicyWriter, keys: Keys) -> None:
    j = judge(load_policy(write_policy()), NAME, D, FakeSource(Found((_cand(keys, "ec1", OTHER),))))
    assert not j.ok
    assert f"payload signs digest '{OTHER}', not this image's '{D}'" in j.reason


def test_one_good_signature_among_bad_ones_is_enough(write_policy: PolicyWriter, keys: Keys) -> None:
    found = Found((_cand(keys, "ec2"), _cand(keys, "ec1", OTHER), _cand(keys, "ec1")), ("broken artifact",))
    j = judge(load_policy(write_policy()), NAME, D, FakeSource(found))
    assert j.ok


def test_malformed_candidates(write_policy: PolicyWriter, keys: Keys) -> None:
    good = _cand(keys, "ec1")
    bad_type = Candidate("t", good.payload.replace(cosign.PAYLOAD_TYPE.encode(), b"other type"), good.signature_b64)
    cands = (Candidate("b64", good.payload, "!!!"), Candidate("nosig", good.payload, ""), bad_type,
             Candidate("json", b"{", good.signature_b64))
    j = judge(load_policy(write_policy()), NAME, D, FakeSource(Found(cands, ("x: unreadable",))))
    assert not j.ok
    for text in ("b64: annotation", "is not base64", "nosig: no 'dev.cosignproject.cosign/signature'",
                 "t: payload type 'other type'", "json: failed to parse simple-signing payload", "x: unreadable"):
        assert text in j.reason


def test_rule_actions_and_default(write_policy: PolicyWriter, keys: Keys) -> None:
    src = FakeSource(Found(()))
    assert not judge(load_policy(write_policy("other/*")), NAME, D, src).ok
    assert "default is reject" in judge(load_policy(write_policy("other/*")), NAME, D, src).reason
    assert judge(load_policy(write_policy("other/*", default="accept")), NAME, D, src).ok
    p = write_policy("reg.example/*")
    p.write_text(p.read_text().replace('unsigned = "reject"', 'action = "reject"'))
    assert not judge(load_policy(p), NAME, D, FakeSource(Found((_cand(keys, "ec1"),)))).ok
    p.write_text(p.read_text().replace('action = "reject"', 'action = "accept"'))
    assert judge(load_policy(p), NAME, D, src).ok


def test_lookup_failure_fails_closed(write_policy: PolicyWriter) -> None:
    j = judge(load_policy(write_policy()), NAME, D, FakeSource(Found(()), UnavailableError("registry down")))
    assert not j.ok
    assert "cannot look up signatures: registry down" in j.reason


def test_bad_reference_is_refused(write_policy: PolicyWriter) -> None:
    assert not judge(load_policy(write_policy()), "UPPER/Case", D, FakeSource(Found(()))).ok


def test_require_raises(write_policy: PolicyWriter) -> None:
    with pytest.raises(VerificationError, match="not signed"):
        require(load_policy(write_policy()), NAME, D, FakeSource(Found(())))
