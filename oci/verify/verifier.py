"""The judgement: a policy, an image (reference + digest) and the signatures found for it.

Sans-I/O core: ``judge`` gets the candidates from a ``SignatureSource`` (a registry, runwasm's
store) and decides. Contract:

- the first policy rule matching the reference applies (none: the policy ``default``);
- ``accept``/``reject`` rules decide without looking at signatures;
- ``verify``: the image is accepted when at least one candidate verifies: a cosign
  simple-signing signature by one of the rule's keys whose payload names exactly this digest
  and cosign's type, or a Sigstore bundle (offline, against the rule's trust roots) whose
  certificate identity is one of the rule's identities and whose statement names this digest;
- no candidate at all: ``unsigned = "reject"`` refuses, ``"warn"`` accepts with a warning;
- candidates that all fail: refused, with every failure listed (a bad signature is never
  downgraded to "unsigned").
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from typing import Protocol

from runwasm.oci.digest import Digest
from runwasm.oci.errors import InvalidArgumentError, OciError
from runwasm.oci.reference import Reference
from runwasm.oci.verify import cosign
from runwasm.oci.verify.errors import VerificationError
from runwasm.oci.verify.policy import Policy, Rule

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One signature found for an image; ``source`` says where (for messages)."""

    source: str
    payload: bytes = b""
    signature_b64: str = ""
    bundle: bytes = b""

    @property
    def is_bundle(self) -> bool:
        return bool(self.bundle)


@dataclass(frozen=True, slots=True)
class Found:
    candidates: tuple[Candidate, ...]
    problems: tuple[str, ...] = ()  # signature artifacts that exist but could not be read


class SignatureSource(Protocol):
    def find(self, ref: Reference, digest: Digest) -> Found: ...


@dataclass(frozen=True, slots=True)
class Judgement:
    ok: bool
    reason: str
    warning: bool = False


def _check_key_signature(c: Candidate, rule: Rule, policy: Policy, digest: Digest) -> str:
    """'' when ``c`` is acceptable; else what is wrong. On success the signer goes in the log."""
    try:
        payload = cosign.SimpleSigning.parse(c.payload)
    except InvalidArgumentError as err:
        return str(err)
    if payload.type != cosign.PAYLOAD_TYPE:
        return f"payload type {payload.type!r}, expected {cosign.PAYLOAD_TYPE!r}"
    if payload.manifest_digest != digest:
        return (f"payload signs digest {str(payload.manifest_digest)!r}, not this image's {str(digest)!r}"
                " (manifest replaced or signature copied from another image)")
    try:
        sig = base64.b64decode(c.signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return f"annotation {cosign.SIGNATURE_ANNOTATION!r} is not base64"
    if not sig:
        return f"no {cosign.SIGNATURE_ANNOTATION!r} annotation"
    if not rule.keys:
        return "a key signature, but the policy rule lists no keys"
    for name in rule.keys:
        if policy.keys[name].verify(sig, c.payload):
            return ""
    return f"signature does not verify with key(s) {list(rule.keys)}"


def _signer(c: Candidate, rule: Rule, policy: Policy) -> str:
    sig = base64.b64decode(c.signature_b64)
    for name in rule.keys:
        key = policy.keys[name]
        if key.verify(sig, c.payload):
            return f"key {name!r} ({key.algorithm}, sha256:{key.key_id[:16]})"
    return "?"


def judge(policy: Policy, name: str, digest: Digest, source: SignatureSource) -> Judgement:
    """Decide whether image ``name`` resolved to ``digest`` may be used."""
    what = f"image {name!r} ({digest})"
    try:
        ref = Reference.parse(name)
    except InvalidArgumentError as err:
        return Judgement(False, f"{what} refused: {err}")
    rule = policy.rule_for(ref)
    if rule is None:
        if policy.default == "accept":
            return Judgement(True, f"{what} accepted: no rule of policy {policy.path!r} matches; default accept")
        return Judgement(False, f"{what} refused: no rule of policy {policy.path!r} matches {ref.name!r}"
                                " and the default is reject")
    if rule.action != "verify":
        return Judgement(rule.action == "accept", f"{what} {rule.action}ed by rule {rule.match!r}")
    try:
        found = source.find(ref, digest)
    except OciError as err:
        return Judgement(False, f"{what} refused: cannot look up signatures: {err}")
    failures = list(found.problems)
    for c in found.candidates:
        if c.is_bundle:
            from runwasm.oci.verify.bundle import verify_bundle

            problem, signer = verify_bundle(c.bundle, digest, rule.identities, policy.trust_roots)
        else:
            problem = _check_key_signature(c, rule, policy, digest)
            signer = "" if problem else _signer(c, rule, policy)
        if not problem:
            return Judgement(True, f"{what} accepted: signed by {signer} ({c.source})")
        failures.append(f"{c.source}: {problem}")
    if not failures:
        if rule.unsigned == "warn":
            return Judgement(True, f"WARNING: {what} is not signed; accepted because rule {rule.match!r}"
                                   " has unsigned = \"warn\"", warning=True)
        return Judgement(False, f"{what} refused: not signed (no cosign signature or Sigstore bundle"
                                f" found) and rule {rule.match!r} requires one")
    return Judgement(False, f"{what} refused: no valid signature: " + "; ".join(failures))


def require(policy: Policy, name: str, digest: Digest, source: SignatureSource) -> Judgement:
    """``judge``, raising VerificationError when refused (warnings are logged and returned)."""
    j = judge(policy, name, digest, source)
    if not j.ok:
        raise VerificationError(j.reason)
    if j.warning:
        log.warning("%s", j.reason)
    return j
