"""Where signatures are found: a registry (``RegistrySource``) or runwasm's store (``StoreSource``).

Both read the same artifacts (see ``cosign``): the ``sha256-<hex>.sig`` tag of the image's
repository and, in a registry, the OCI 1.1 referrers of the digest (signature artifacts and
Sigstore bundles). In the store, a signature image is an image record named
``<domain/path>:sha256-<hex>.sig``, written by ``runwasm image sign`` or imported with the image
(``cosign save`` layouts and ``runwasm image sign --output-layout`` carry them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from runwasm.oci.digest import Digest
from runwasm.oci.errors import NotFoundError, OciError
from runwasm.oci.image import Manifest
from runwasm.oci.images import ImageRecord, ImageStore
from runwasm.oci.reference import Reference
from runwasm.oci.store import ContentStore
from runwasm.oci.verify import cosign
from runwasm.oci.verify.policy import RegistryConfig
from runwasm.oci.verify.registry import Registry
from runwasm.oci.verify.verifier import Candidate, Found

ReadBlob = Callable[[Digest], bytes]


def candidates_from_manifest(data: bytes, read: ReadBlob, source: str, subject: Digest | None = None) -> list[Candidate]:
    """Signature candidates in one signature manifest (tag scheme or referrer artifact).

    Raises OciError when the manifest or a blob is malformed or missing."""
    manifest = Manifest.from_json(data, source)
    out = []
    if subject is not None and manifest.artifact_type and cosign.is_bundle_type(manifest.artifact_type):
        for i, layer in enumerate(manifest.layers):
            if cosign.is_bundle_type(layer.media_type):
                out.append(Candidate(f"{source} bundle layer {i}", bundle=read(layer.digest)))
        return out
    for i, layer in enumerate(manifest.layers):
        if layer.media_type == cosign.SIMPLESIGNING:
            out.append(Candidate(f"{source} layer {i}", payload=read(layer.digest),
                                 signature_b64=layer.annotations.get(cosign.SIGNATURE_ANNOTATION, "")))
    return out


class RegistrySource:
    """Signatures of ``ref``'s repository in its registry (configured by the policy's registries)."""

    def __init__(self, registries: Mapping[str, RegistryConfig] | None = None, timeout: float = 30.0) -> None:
        self.registries = registries or {}
        self.timeout = timeout

    def find(self, ref: Reference, digest: Digest) -> Found:
        reg = Registry(ref.domain, self.registries.get(ref.domain), self.timeout)
        repo = ref.path

        def read(d: Digest) -> bytes:
            return reg.get_blob(repo, d)

        cands: list[Candidate] = []
        problems: list[str] = []
        tag = cosign.sig_tag(digest)
        sig = reg.get_manifest(repo, tag)
        if sig is not None:
            try:
                cands += candidates_from_manifest(sig.data, read, f"{ref.name}:{tag}")
            except OciError as err:
                problems.append(f"{ref.name}:{tag}: unreadable signature image: {err}")
        for desc in reg.referrers(repo, digest):
            if desc.artifact_type != cosign.SIG_ARTIFACT_TYPE and not cosign.is_bundle_type(desc.artifact_type):
                continue
            where = f"{ref.name}@{desc.digest} (referrer {desc.artifact_type})"
            try:
                fetched = reg.get_manifest(repo, str(desc.digest))
                if fetched is None:
                    problems.append(f"{where}: listed but not found")
                    continue
                cands += candidates_from_manifest(fetched.data, read, where, subject=digest)
            except OciError as err:
                problems.append(f"{where}: unreadable: {err}")
        return Found(tuple(cands), tuple(problems))


class StoreSource:
    """Signature records in runwasm's store; ``pending`` adds records an import is about to write."""

    def __init__(self, store: ContentStore, images: ImageStore, pending: list[ImageRecord] | None = None) -> None:
        self.store = store
        self.images = images
        self.pending = {r.name: r for r in pending or []}

    def find(self, ref: Reference, digest: Digest) -> Found:
        name = f"{ref.name}:{cosign.sig_tag(digest)}"
        record = self.pending.get(name)
        if record is None:
            try:
                record = self.images.get(name)
            except NotFoundError:
                return Found(())
        try:
            data = self.store.read_bytes(record.target.digest)
            return Found(tuple(candidates_from_manifest(data, self.store.read_bytes, f"store record {name!r}")))
        except OciError as err:
            return Found((), (f"store record {name!r}: unreadable signature image: {err}",))
