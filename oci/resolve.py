"""Resolve an image record or descriptor to one manifest and its config, reading the store.

``resolve(store, target, wanted)`` follows nested indexes (choosing a platform with
``platforms.select_manifest``), parses the manifest and config, checks that the config's
platform is one of ``wanted``, and checks that every layer media type is supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.errors import InvalidArgumentError, NotFoundError, UnsupportedMediaTypeError
from runwasm.oci.image import Descriptor, ImageConfig, Index, Manifest, Platform
from runwasm.oci.platforms import DEFAULT_PLATFORMS, matches, select_manifest

MAX_DEPTH = 4


class BlobSource(Protocol):
    """Where ``resolve`` reads manifests and configs: runwasm's ``ContentStore``, or a client of
    containerd's content store (``runwasm.shim.server.containerd_api``). Must verify the digest."""

    def read_bytes(self, digest: Digest) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """A manifest chosen for a platform, with its parsed config."""

    manifest_desc: Descriptor
    manifest: Manifest
    config: ImageConfig

    @property
    def layer_kinds(self) -> tuple[mt.LayerKind, ...]:
        return tuple(mt.layer_kind(layer.media_type) for layer in self.manifest.layers)


def resolve(store: BlobSource, target: Descriptor,
            wanted: Sequence[Platform] = DEFAULT_PLATFORMS) -> ResolvedImage:
    """Resolve ``target`` to a manifest for the first matching platform.

    Raises:
        NotFoundError: a blob is missing or no platform matches.
        InvalidArgumentError: malformed documents, a layer/diff_id count mismatch.
        UnsupportedMediaTypeError: a layer type runwasm cannot apply.
    """
    desc = target
    for _ in range(MAX_DEPTH):
        if mt.is_index(desc.media_type):
            index = Index.from_json(store.read_bytes(desc.digest), desc.digest)
            desc = select_manifest(index, wanted)
            continue
        if not mt.is_manifest(desc.media_type):
            raise UnsupportedMediaTypeError(
                f"failed to resolve {str(desc.digest)!r}: not a manifest or index: {desc.media_type!r}")
        manifest = Manifest.from_json(store.read_bytes(desc.digest), desc.digest)
        config = ImageConfig.from_json(store.read_bytes(manifest.config.digest), manifest.config.digest)
        if not any(matches(w, config.platform) for w in wanted):
            raise NotFoundError(f"failed to resolve {str(desc.digest)!r}: config platform {config.platform}"
                                f" is not one of {', '.join(map(str, wanted))}")
        for i, layer in enumerate(manifest.layers):
            try:
                mt.layer_kind(layer.media_type)
            except UnsupportedMediaTypeError as err:
                raise UnsupportedMediaTypeError(f"failed to resolve {str(desc.digest)!r}: layers[{i}]: {err}") from err
        kinds = [mt.layer_kind(x.media_type) for x in manifest.layers]
        fs_layers = sum(1 for k in kinds if k is not mt.LayerKind.WASM)
        if len(config.diff_ids) not in (len(manifest.layers), fs_layers):
            raise InvalidArgumentError(
                f"failed to resolve {str(desc.digest)!r}: {len(manifest.layers)} layers but"
                f" {len(config.diff_ids)} diff_ids")
        return ResolvedImage(desc, manifest, config)
    raise InvalidArgumentError(f"failed to resolve {str(target.digest)!r}: indexes nested deeper than {MAX_DEPTH}")
