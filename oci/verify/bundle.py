"""Sigstore bundles (``application/vnd.dev.sigstore.bundle.v0.3+json``), verified offline.

The ``sigstore`` package (sigstore-python) does the verification: ``Verifier(trusted_root=
TrustedRoot.from_file(path))`` checks the Fulcio-style certificate chain against the trust
root's certificate authorities, the embedded SCT against its CT logs, the transparency-log
entry's inclusion proof, signed checkpoint and inclusion promise against its Rekor keys, and
the signature itself - all from the bundle and the trust-root file, with no network call (the
Rekor client it builds is never used for bundles that carry their inclusion proof, which v0.2+
bundles must). runwasm's glue around it:

- the trust root is the file named by the policy rule's identity (``trust_roots.<name>``);
- the certificate must be for the identity's ``subject`` (SAN) and ``issuer`` (OIDC issuer);
- the bundle must hold a DSSE envelope with an in-toto statement (``application/vnd.in-toto+json``)
  one of whose subjects has ``sha256`` = the image digest (what ``cosign sign`` with the new
  bundle format produces). Message-signature bundles sign a blob whose bytes the registry does
  not hold, so they cannot name an image: refused with that reason.
Key-based bundles (a ``publicKey`` hint instead of a certificate) are not verified by
sigstore-python 4.x; they are refused with that reason (use the ``.sig`` form for keys).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runwasm.oci.digest import Digest
from runwasm.oci.verify.policy import Identity

IN_TOTO = "application/vnd.in-toto+json"


def _statement_names(payload: bytes, digest: Digest) -> str:
    """'' when the in-toto statement has a subject with this digest; else the problem."""
    try:
        stmt: Any = json.loads(payload)
        subjects = stmt.get("subject") or []
        digests = [s.get("digest", {}).get(digest.algorithm) for s in subjects if isinstance(s, dict)]
    except (ValueError, AttributeError) as err:
        return f"in-toto statement is not valid JSON: {err}"
    if digest.hex in digests:
        return ""
    return f"in-toto statement subjects {digests} do not include this image's digest {str(digest)!r}"


def verify_bundle(data: bytes, digest: Digest, identities: tuple[Identity, ...],
                  trust_roots: Mapping[str, Path]) -> tuple[str, str]:
    """Verify a bundle for image ``digest``: returns ('', signer) or (problem, '')."""
    if not identities:
        return "a Sigstore bundle, but the policy rule lists no identities", ""
    try:
        from sigstore.errors import Error as SigstoreError
        from sigstore.models import Bundle, TrustedRoot
        from sigstore.verify import Verifier
        from sigstore.verify.policy import Identity as SigstoreIdentity
    except ImportError as err:  # pragma: no cover - a runtime dependency
        return f"the 'sigstore' package is not installed: {err}", ""
    try:
        bundle = Bundle.from_json(data)
    except (SigstoreError, ValueError) as err:
        return f"not a valid Sigstore bundle: {err}", ""
    if bundle._inner.verification_material.public_key is not None:  # noqa: SLF001
        return "key-based Sigstore bundles are not supported (sigstore-python verifies certificate bundles only)", ""
    problems = []
    for ident in identities:
        try:
            verifier = Verifier(trusted_root=TrustedRoot.from_file(str(trust_roots[ident.trust_root])))
            if bundle._dsse_envelope is None:  # noqa: SLF001
                return "a message-signature bundle cannot name an image (expected a DSSE in-toto statement)", ""
            ptype, payload = verifier.verify_dsse(bundle, SigstoreIdentity(identity=ident.subject, issuer=ident.issuer))
        except (SigstoreError, ValueError, OSError) as err:
            problems.append(f"identity {ident.subject!r} from {ident.issuer!r} (trust root {ident.trust_root!r}): {err}")
            continue
        if ptype != IN_TOTO:
            return f"DSSE payload type {ptype!r}, expected {IN_TOTO!r}", ""
        problem = _statement_names(payload, digest)
        if problem:
            return problem, ""
        return "", f"Sigstore identity {ident.subject!r} (issuer {ident.issuer!r}, trust root {ident.trust_root!r})"
    return "; ".join(problems), ""
