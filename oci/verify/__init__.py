"""Image signature verification (supply chain): only signed images run.

Modules, one per step:

- ``policy``   the TOML policy: which references need which keys or Sigstore identities,
  and what an unsigned image gets (refuse or warn).
- ``keys``     public/private key files (ECDSA P-256, Ed25519) and raw signature checks.
- ``cosign``   cosign's OCI signature formats: the simple-signing payload, the
  ``sha256-<hex>.sig`` signature image and the OCI 1.1 referrer artifacts.
- ``bundle``   Sigstore bundles verified offline against a trusted-root file.
- ``registry`` a small OCI distribution client (manifests, blobs, referrers, push).
- ``local``    signatures kept in runwasm's store and in OCI layouts.
- ``verifier`` the judgement: policy + signatures found -> accept / warn / refuse.
- ``sign``     making cosign-compatible signatures (``runwasm image sign``).
- ``bindir``   ``runwasm-verify``, containerd 2.x's image-verifier bindir executable.
"""
