"""Garbage collection: mark from image records, sweep unreferenced blobs and ingest leftovers.

Marking follows index -> manifests (those present), manifest -> config and layers. The diff
IDs of every reachable config (and EROFS layer digests) are returned as ``live_layers`` so the
layer store can drop materialisations nobody references. Run with ``store.lock()`` held.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.errors import OciError
from runwasm.oci.image import Descriptor, ImageConfig, Index, Manifest
from runwasm.oci.images import ImageStore
from runwasm.oci.store import ContentStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class GcResult:
    removed_blobs: list[Digest] = field(default_factory=list)
    removed_ingest: int = 0
    live_blobs: set[Digest] = field(default_factory=set)
    live_layers: set[Digest] = field(default_factory=set)
    removed_layers: list[Path] = field(default_factory=list)


def mark(store: ContentStore, images: ImageStore) -> tuple[set[Digest], set[Digest]]:
    """Return (reachable blob digests, reachable layer diff IDs)."""
    live: set[Digest] = set()
    layers: set[Digest] = set()
    stack: list[Descriptor] = [r.target for r in images.list()]
    while stack:
        desc = stack.pop()
        if desc.digest in live or not store.has(desc.digest):
            continue
        live.add(desc.digest)
        try:
            if mt.is_index(desc.media_type):
                stack.extend(Index.from_json(store.read_bytes(desc.digest), desc.digest).manifests)
            elif mt.is_manifest(desc.media_type):
                manifest = Manifest.from_json(store.read_bytes(desc.digest), desc.digest)
                live.add(manifest.config.digest)
                live.update(layer.digest for layer in manifest.layers)
                if store.has(manifest.config.digest):
                    config = ImageConfig.from_json(store.read_bytes(manifest.config.digest))
                    layers.update(config.diff_ids)
                layers.update(layer.digest for layer in manifest.layers)
        except OciError:
            log.warning("gc: cannot parse %s; keeping it and not following it", desc.digest, exc_info=True)
    return live, layers


def collect_garbage(store: ContentStore, images: ImageStore) -> GcResult:
    """Sweep unreferenced blobs, ingest leftovers and layer materialisations that neither an
    image nor a recorded rootfs (``<root>/mounts``) uses. Caller holds ``store.lock()``."""
    from runwasm.oci.layers import LayerStore
    from runwasm.oci.mounts.rootfs import default_state_dir, in_use_layers

    result = GcResult()
    result.live_blobs, result.live_layers = mark(store, images)
    result.removed_ingest = store.clean_ingest()
    for digest in store.list():
        if digest not in result.live_blobs:
            store.delete(digest)
            result.removed_blobs.append(digest)
    keep = result.live_layers | {Digest("sha256", h) for h in in_use_layers(default_state_dir(store.root))}
    result.removed_layers = LayerStore(store.root).remove_unreferenced(keep)
    return result
