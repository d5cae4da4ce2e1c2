"""cosign's OCI signature formats (facts from cosign's documented spec, no cosign code).

Tag scheme (cosign's default): the signatures of image ``REPO@sha256:<hex>`` live in the same
repository under the tag ``sha256-<hex>.sig``: an OCI image manifest whose config is a minimal
image config and whose layers are one per signature:

- layer media type ``application/vnd.dev.cosign.simplesigning.v1+json``; the layer blob is the
  *payload* (below), the signed bytes;
- layer annotation ``dev.cosignproject.cosign/signature``: the signature, standard base64
  (ECDSA P-256: ASN.1 DER over SHA-256 of the payload; Ed25519: over the payload itself);
- optional ``dev.sigstore.cosign/certificate`` / ``…/chain`` / ``…/bundle`` (keyless, Rekor).

The payload ("simple signing", Red Hat's atomic container signature format)::

    {"critical":{"identity":{"docker-reference":"REGISTRY/REPO"},
                 "image":{"docker-manifest-digest":"sha256:<hex>"},
                 "type":"cosign container image signature"},
     "optional":null | {"key":"value",...}}

cosign's verification rules used here: the signature must verify over the exact payload bytes,
``critical.type`` must be the cosign type and ``critical.image.docker-manifest-digest`` must be
the digest the reference resolved to. ``docker-reference`` is reported, not enforced (cosign does
not enforce it either: images are copied between registries).

OCI 1.1 referrers: the same layers in a manifest with ``artifactType``
``application/vnd.dev.cosign.artifact.sig.v1+json`` and ``subject`` = the image; Sigstore
bundles are referrers with artifact type ``application/vnd.dev.sigstore.bundle.v0.3+json`` whose
single layer (same media type) is the bundle JSON. Registries without the referrers API list
referrers in an index under the fallback tag ``sha256-<hex>``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.errors import InvalidArgumentError
from runwasm.oci.image import Descriptor, Manifest
from runwasm.oci.jsonparse import as_object, loads_object, opt_object, req_str

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
PAYLOAD_TYPE = "cosign container image signature"
SIG_ARTIFACT_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIG_TAG_RE = re.compile(r"^(sha256)-([0-9a-f]{64})\.sig$")
EPOCH = "0001-01-01T00:00:00Z"


def sig_tag(digest: Digest) -> str:
    """The tag-scheme tag holding ``digest``'s signatures: ``sha256-<hex>.sig``."""
    return f"{digest.algorithm}-{digest.hex}.sig"


def referrers_tag(digest: Digest) -> str:
    """The OCI 1.1 referrers fallback tag: ``sha256-<hex>``."""
    return f"{digest.algorithm}-{digest.hex}"


def signed_digest_of_tag(tag: str) -> Digest | None:
    """The digest a ``sha256-<hex>.sig`` tag signs, or None for other tags."""
    m = SIG_TAG_RE.match(tag)
    return Digest(m.group(1), m.group(2)) if m else None


def is_bundle_type(media_type: str) -> bool:
    return media_type.startswith(BUNDLE_PREFIX)


@dataclass(frozen=True, slots=True)
class SimpleSigning:
    """A parsed simple-signing payload."""

    docker_reference: str
    manifest_digest: Digest
    type: str
    optional: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes) -> SimpleSigning:
        """Raises InvalidArgumentError naming the bad field."""
        try:
            obj = loads_object(data)
            critical = as_object(obj.get("critical"), "critical")
            identity = opt_object(critical, "identity", "critical")
            image = opt_object(critical, "image", "critical")
            digest = Digest.parse(req_str(image, "docker-manifest-digest", "critical.image"))
            optional = obj.get("optional") or {}
            if not isinstance(optional, dict):
                raise InvalidArgumentError(f"optional: expected object or null, got {type(optional).__name__}")
            return cls(req_str(identity, "docker-reference", "critical.identity"), digest,
                       req_str(critical, "type", "critical"), dict(optional))
        except InvalidArgumentError as err:
            raise InvalidArgumentError(f"failed to parse simple-signing payload: {err}") from err


def make_payload(docker_reference: str, digest: Digest, optional: dict[str, str] | None = None) -> bytes:
    """The payload cosign writes (compact JSON, cosign's key order)."""
    return json.dumps({"critical": {"identity": {"docker-reference": docker_reference},
                                    "image": {"docker-manifest-digest": str(digest)},
                                    "type": PAYLOAD_TYPE},
                       "optional": optional or None}, separators=(",", ":")).encode()


def signature_layers(manifest: Manifest) -> list[Descriptor]:
    """The simple-signing layers of a signature manifest (others are ignored by cosign too)."""
    return [d for d in manifest.layers if d.media_type == SIMPLESIGNING]


@dataclass(frozen=True, slots=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> Digest:
        return Digest.of_bytes(self.data)

    def descriptor(self, annotations: dict[str, str] | None = None, artifact_type: str = "") -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data), dict(annotations or {}),
                          artifact_type=artifact_type)


@dataclass(frozen=True, slots=True)
class SignatureLayer:
    payload: bytes
    signature_b64: str
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BuiltManifest:
    """A manifest plus every blob it references (config and layers)."""

    manifest: Blob
    blobs: tuple[Blob, ...]


def _layer_descs(layers: list[SignatureLayer]) -> list[dict[str, Any]]:
    out = []
    for layer in layers:
        ann = {SIGNATURE_ANNOTATION: layer.signature_b64, **layer.annotations}
        out.append(Blob(SIMPLESIGNING, layer.payload).descriptor(ann).to_json())
    return out


def build_sig_manifest(layers: list[SignatureLayer]) -> BuiltManifest:
    """The tag-scheme ``.sig`` image (config shaped like cosign's)."""
    if not layers:
        raise InvalidArgumentError("failed to build signature manifest: no signatures")
    config = Blob(mt.OCI_CONFIG, json.dumps({
        "architecture": "", "created": EPOCH, "history": [{"created": EPOCH}], "os": "",
        "rootfs": {"type": "layers", "diff_ids": [str(Digest.of_bytes(x.payload)) for x in layers]},
        "config": {}}, separators=(",", ":")).encode())
    manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config.descriptor().to_json(),
                "layers": _layer_descs(layers)}
    blobs = (config, *(Blob(SIMPLESIGNING, x.payload) for x in layers))
    return BuiltManifest(Blob(mt.OCI_MANIFEST, json.dumps(manifest, separators=(",", ":")).encode()), blobs)


def build_referrer_manifest(layers: list[SignatureLayer], subject: Descriptor) -> BuiltManifest:
    """The OCI 1.1 form: an artifact manifest with ``subject`` = the signed image."""
    empty = Blob(mt.OCI_EMPTY, b"{}")
    manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": SIG_ARTIFACT_TYPE,
                "config": empty.descriptor().to_json(), "layers": _layer_descs(layers),
                "subject": Descriptor(subject.media_type, subject.digest, subject.size).to_json()}
    blobs = (empty, *(Blob(SIMPLESIGNING, x.payload) for x in layers))
    return BuiltManifest(Blob(mt.OCI_MANIFEST, json.dumps(manifest, separators=(",", ":")).encode()), blobs)


def build_bundle_manifest(bundle: bytes, subject: Descriptor) -> BuiltManifest:
    """A Sigstore bundle as an OCI 1.1 referrer of ``subject``."""
    empty = Blob(mt.OCI_EMPTY, b"{}")
    layer = Blob(BUNDLE_V03, bundle)
    manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": BUNDLE_V03,
                "config": empty.descriptor().to_json(), "layers": [layer.descriptor().to_json()],
                "subject": Descriptor(subject.media_type, subject.digest, subject.size).to_json()}
    return BuiltManifest(Blob(mt.OCI_MANIFEST, json.dumps(manifest, separators=(",", ":")).encode()), (empty, layer))


def existing_layers(manifest: Manifest, read: Any) -> list[SignatureLayer]:
    """The signatures already in a ``.sig`` manifest (``read(digest) -> bytes``), to append to."""
    out = []
    for desc in signature_layers(manifest):
        sig = desc.annotations.get(SIGNATURE_ANNOTATION, "")
        extra = {k: v for k, v in desc.annotations.items() if k != SIGNATURE_ANNOTATION}
        out.append(SignatureLayer(read(desc.digest), sig, extra))
    return out
