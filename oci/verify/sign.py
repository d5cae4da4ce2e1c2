"""Making cosign-compatible signatures (``runwasm image sign``).

A signature is one ``SignatureLayer``: the simple-signing payload naming the image's
``docker-reference`` (``domain/path``) and digest, signed by the private key (see ``cosign``
and ``keys`` for the exact encodings). It is appended to the image's ``sha256-<hex>.sig``
signature image (an existing identical signature is not duplicated), which is then written to:

- runwasm's store: a record ``<domain/path>:sha256-<hex>.sig`` (``to_store``);
- an OCI layout directory (``to_layout``) whose ``index.json`` names it with
  ``org.opencontainers.image.ref.name = sha256-<hex>.sig``, so
  ``skopeo copy oci:DIR:sha256-<hex>.sig docker://REPO:sha256-<hex>.sig`` can push it and
  ``runwasm image import`` brings it into a store;
- a registry (``push``): the tag scheme, or with ``referrer=True`` an OCI 1.1 referrer
  (artifact manifest with ``subject``) plus the ``sha256-<hex>`` fallback tag index, for
  registries without the referrers API.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.errors import NotFoundError
from runwasm.oci.image import Descriptor, Index, Manifest
from runwasm.oci.images import ImageRecord, ImageStore
from runwasm.oci.reference import Reference
from runwasm.oci.store import ContentStore
from runwasm.oci.verify import cosign
from runwasm.oci.verify.keys import PrivateKey, PublicKey
from runwasm.oci.verify.registry import Registry


def sign_layer(key: PrivateKey, ref: Reference, digest: Digest,
               annotations: dict[str, str] | None = None) -> cosign.SignatureLayer:
    """Sign ``digest`` as cosign does for ``ref``'s repository."""
    payload = cosign.make_payload(ref.name, digest, annotations)
    return cosign.SignatureLayer(payload, base64.b64encode(key.sign(payload)).decode())


def _merge(old: list[cosign.SignatureLayer], new: cosign.SignatureLayer,
           key: PublicKey | None = None) -> list[cosign.SignatureLayer]:
    """``old`` plus ``new``, minus earlier signatures of the same payload by the same key (ECDSA
    signatures differ each time, so re-signing would otherwise pile up layers)."""
    def same(x: cosign.SignatureLayer) -> bool:
        if x.payload != new.payload:
            return False
        if x.signature_b64 == new.signature_b64:
            return True
        try:
            return key is not None and key.verify(base64.b64decode(x.signature_b64), x.payload)
        except ValueError:
            return False
    return [*(x for x in old if not same(x)), new]


def to_store(store: ContentStore, images: ImageStore, ref: Reference, digest: Digest,
             layer: cosign.SignatureLayer, signer: PublicKey | None = None) -> ImageRecord:
    """Append ``layer`` to the store's signature image of ``digest``; returns its record."""
    name = f"{ref.name}:{cosign.sig_tag(digest)}"
    old: list[cosign.SignatureLayer] = []
    with store.lock():
        try:
            rec = images.get(name)
            old = cosign.existing_layers(Manifest.from_json(store.read_bytes(rec.target.digest)), store.read_bytes)
        except NotFoundError:
            pass
        built = cosign.build_sig_manifest(_merge(old, layer, signer))
        for blob in (*built.blobs, built.manifest):
            store.put_bytes(blob.data)
        record = ImageRecord(name, built.manifest.descriptor())
        images.put(record)
    return record


def to_layout(directory: Path, ref: Reference, digest: Digest, layer: cosign.SignatureLayer,
              signer: PublicKey | None = None) -> Descriptor:
    """Write (or add to) an OCI layout directory holding the ``.sig`` image of ``digest``."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    tag = cosign.sig_tag(digest)
    index_path = directory / "index.json"
    entries: list[Descriptor] = []
    old: list[cosign.SignatureLayer] = []
    if index_path.exists():
        for d in Index.from_json(index_path.read_bytes(), str(index_path)).manifests:
            if d.annotations.get(mt.ANNOTATION_REF_NAME) == tag:
                m = Manifest.from_json((blobs / d.digest.hex).read_bytes())
                old = cosign.existing_layers(m, lambda x: (blobs / x.hex).read_bytes())
            else:
                entries.append(d)
    built = cosign.build_sig_manifest(_merge(old, layer, signer))
    for blob in (*built.blobs, built.manifest):
        (blobs / blob.digest.hex).write_bytes(blob.data)
    desc = built.manifest.descriptor({mt.ANNOTATION_REF_NAME: tag, mt.ANNOTATION_IMAGE_NAME: f"{ref.name}:{tag}"})
    entries.append(desc)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION}))
    tmp = index_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                               "manifests": [e.to_json() for e in entries]}))
    os.replace(tmp, index_path)
    return desc


def push(reg: Registry, ref: Reference, subject: Descriptor, layer: cosign.SignatureLayer, *,
         referrer: bool = False, signer: PublicKey | None = None) -> Digest:
    """Push the signature of ``subject`` to ``ref``'s repository; returns the signature manifest digest."""
    repo = ref.path
    if referrer:
        built = cosign.build_referrer_manifest([layer], subject)
        for blob in built.blobs:
            reg.push_blob(repo, blob.data)
        sig_digest = reg.push_manifest(repo, str(built.manifest.digest), built.manifest.data, mt.OCI_MANIFEST)
        _update_referrers_tag(reg, repo, subject.digest,
                              built.manifest.descriptor(artifact_type=cosign.SIG_ARTIFACT_TYPE))
        return sig_digest
    tag = cosign.sig_tag(subject.digest)
    old: list[cosign.SignatureLayer] = []
    existing = reg.get_manifest(repo, tag)
    if existing is not None:
        old = cosign.existing_layers(Manifest.from_json(existing.data), lambda d: reg.get_blob(repo, d))
    built = cosign.build_sig_manifest(_merge(old, layer, signer))
    for blob in built.blobs:
        reg.push_blob(repo, blob.data)
    return reg.push_manifest(repo, tag, built.manifest.data, mt.OCI_MANIFEST)


def push_bundle(reg: Registry, ref: Reference, subject: Descriptor, bundle: bytes) -> Digest:
    """Attach a Sigstore bundle to ``subject`` as an OCI 1.1 referrer (cosign's new-bundle layout:
    artifact type and single layer ``application/vnd.dev.sigstore.bundle.v0.3+json``)."""
    repo = ref.path
    built = cosign.build_bundle_manifest(bundle, subject)
    for blob in built.blobs:
        reg.push_blob(repo, blob.data)
    digest = reg.push_manifest(repo, str(built.manifest.digest), built.manifest.data, mt.OCI_MANIFEST)
    _update_referrers_tag(reg, repo, subject.digest, built.manifest.descriptor(artifact_type=cosign.BUNDLE_V03))
    return digest


def _update_referrers_tag(reg: Registry, repo: str, subject: Digest, desc: Descriptor) -> None:
    """The referrers tag schema: index ``sha256-<hex>`` lists every referrer of ``subject``.

    Skipped when the registry serves the referrers API (it then maintains the list itself)."""
    status, _, _ = reg.request("GET", f"/v2/{repo}/referrers/{subject}", headers={"Accept": mt.OCI_INDEX})
    if status != 404:
        return
    tag = cosign.referrers_tag(subject)
    fetched = reg.get_manifest(repo, tag)
    entries = list(Index.from_json(fetched.data).manifests) if fetched is not None and mt.is_index(fetched.media_type) else []
    if any(e.digest == desc.digest for e in entries):
        return
    entries.append(desc)
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                       "manifests": [e.to_json() for e in entries]}, separators=(",", ":")).encode()
    reg.push_manifest(repo, tag, body, mt.OCI_INDEX)
