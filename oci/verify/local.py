"""Verification for runwasm's own store: ``runwasm image import --verify`` and ``runwasm run``.

The policy in force is the ``--verify POLICY`` file, else the store's default
``<root>/verify-policy.toml`` when it exists, else none (no verification, as before).
Signatures are the store's (or the importing layout's) ``sha256-<hex>.sig`` records.
"""

from __future__ import annotations

from pathlib import Path

from runwasm.oci.image import Descriptor
from runwasm.oci.images import ImageRecord, ImageStore
from runwasm.oci.store import ContentStore
from runwasm.oci.verify import cosign
from runwasm.oci.verify.policy import Policy, load_policy
from runwasm.oci.verify.sources import StoreSource
from runwasm.oci.verify.verifier import Judgement, require

STORE_POLICY = "verify-policy.toml"


def policy_for(root: Path, explicit: str | None) -> Policy | None:
    """The policy to apply for store ``root`` (see module doc). Raises PolicyError."""
    if explicit:
        return load_policy(Path(explicit))
    default = root / STORE_POLICY
    return load_policy(default) if default.exists() else None


def is_signature_record(name: str) -> bool:
    return cosign.signed_digest_of_tag(name.rsplit(":", 1)[-1]) is not None


def verify_records(policy: Policy, store: ContentStore, images: ImageStore,
                   records: list[ImageRecord]) -> list[Judgement]:
    """Judge every image record of an import (signature records are the evidence, not judged).

    Raises VerificationError for the first refused image."""
    source = StoreSource(store, images, records)
    return [require(policy, r.name, r.target.digest, source) for r in records if not is_signature_record(r.name)]


def verified_target(policy: Policy, store: ContentStore, images: ImageStore, name: str) -> Descriptor:
    """The target of stored image ``name`` once the policy accepts it (use it, not the name,
    afterwards, so a record replaced meanwhile is not used unverified). Raises VerificationError."""
    record = images.get(name)
    require(policy, record.name, record.target.digest, StoreSource(store, images))
    return record.target
