"""Images between containerd's content store and runwasm's (``runwasm image pull-containerd`` /
``push-containerd``, ``runwasm run --containerd``).

``pull(client, root, ref, ...)``: containerd's image record ``ref`` (Images.Get) is resolved for
the wanted platforms through containerd's content store (``resolve`` reads the index, manifest
and config over Content.Read, each checked against its digest); those blobs and every layer are
streamed into runwasm's ``ContentStore`` (``ingest`` verifies digest and size; blobs already
there are not read again); the record is stored under the same name (or ``name``). Nothing is
downloaded from a registry. With ``snapshotter_root`` (the ``--root`` of a ``runwasm
snapshotter`` that containerd unpacked the image through), each filesystem layer whose chain ID
that snapshotter holds committed is hard-linked (copied across filesystems) into the layer
store as ``layers/<diff id>/layer.erofs`` instead of being converted again: the snapshot was
made from the same verified layer by the same tar -> EROFS writer.

``push(client, root, ref, ...)``: runwasm's image ``ref`` is written to containerd: blobs
children first (layers, config, manifest, index) under one lease (Content.Write; containerd
checks each digest), manifests and indexes labelled ``containerd.io/gc.ref.content.*`` naming
their children as ``ctr images import`` does (so containerd's GC keeps them once the lease
ends), then the image record (Images.Create, or Update of an existing name). Children of an
index that the store does not hold (platforms not imported) are skipped; a missing manifest,
config or layer is an error naming the digest. ``ctr run`` unpacks it on first use.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.errors import NotFoundError
from runwasm.oci.image import Descriptor, Index, Manifest, Platform
from runwasm.oci.platforms import DEFAULT_PLATFORMS
from runwasm.oci.store import ContentStore
from runwasm.shim.server.containerd_api import ChunkReader, ContainerdClient

log = logging.getLogger(__name__)
GC_REF = "containerd.io/gc.ref.content"


@dataclass(frozen=True, slots=True)
class PullResult:
    name: str
    target: Descriptor
    fetched: int  # blobs read from containerd
    present: int  # blobs runwasm's store already held
    reused_layers: tuple[Digest, ...]  # diff IDs taken from the snapshotter's EROFS layers


@dataclass(frozen=True, slots=True)
class PushResult:
    name: str
    target: Descriptor
    written: int  # blobs sent (containerd may already have had some)


def pull(client: ContainerdClient, root: Path, ref: str, *, name: str | None = None,
         platforms: Sequence[Platform] = DEFAULT_PLATFORMS, snapshotter_root: Path | None = None) -> PullResult:
    """Copy image ``ref`` from containerd into the store at ``root`` (see module doc).

    Raises:
        NotFoundError: no such image in containerd's namespace, or a blob it does not hold.
        DigestMismatchError: containerd sent bytes that do not match a digest.
    """
    from runwasm.oci.images import ImageRecord, ImageStore
    from runwasm.oci.mounts.rootfs import fs_layers
    from runwasm.oci.resolve import resolve

    target = client.image_target(ref)
    resolved = resolve(client, target, platforms)
    if target.media_type in (mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST) and not any(
            m.digest == resolved.manifest_desc.digest for m in Index.from_json(client.read_bytes(target.digest)).manifests):
        target = resolved.manifest_desc  # nested indexes: keep the chosen manifest only
    cs = ContentStore(root)
    wanted: list[Descriptor] = [*resolved.manifest.layers, resolved.manifest.config, resolved.manifest_desc]
    if target.digest != resolved.manifest_desc.digest:
        wanted.append(target)
    fetched = present = 0
    with cs.lock():
        for desc in wanted:
            if cs.has(desc.digest):
                present += 1
                continue
            cs.ingest(cast(IO[bytes], ChunkReader(_blob_chunks(client, desc))), desc.digest, desc.size)
            fetched += 1
        reused = _reuse_snapshotter_layers(root, client.namespace, fs_layers(resolved), snapshotter_root) \
            if snapshotter_root is not None else ()
    record_name = name or ref
    ImageStore(root).put(ImageRecord(record_name, target))
    return PullResult(record_name, target, fetched, present, reused)


def pull_command(address: str, namespace: str, root: Path, ref: str, *, name: str | None = None,
                 platforms: Sequence[Platform] = DEFAULT_PLATFORMS, snapshotter_root: Path | None = None) -> PullResult:
    """``pull`` with its own client to containerd at ``address``."""
    with ContainerdClient(address, namespace) as client:
        return pull(client, root, ref, name=name, platforms=platforms, snapshotter_root=snapshotter_root)


def push_command(address: str, namespace: str, root: Path, ref: str, *, name: str | None = None) -> PushResult:
    """``push`` with its own client to containerd at ``address``."""
    with ContainerdClient(address, namespace) as client:
        return push(client, root, ref, name=name)


def _blob_chunks(client: ContainerdClient, desc: Descriptor) -> Iterator[bytes]:
    from runwasm.shim.common.errors import NotFoundError as ContainerdNotFound

    try:
        yield from client.stream(desc.digest)
    except ContainerdNotFound as err:
        raise NotFoundError(f"failed to copy {desc.media_type} {str(desc.digest)!r} from containerd: its content"
                            f" store does not hold it ({err})") from err


def _reuse_snapshotter_layers(root: Path, namespace: str, layers: list[tuple[Descriptor, Digest]],
                              snapshotter_root: Path) -> tuple[Digest, ...]:
    """Link the snapshotter's committed EROFS layers into ``layers/<diff id>/``; returns the
    diff IDs linked (layers the harness already had are left alone)."""
    from runwasm.oci.layers import LayerStore
    from runwasm.oci.snapshotter.share import chain_ids, committed_layers

    ls = LayerStore(root)
    chains = chain_ids([diff for _, diff in layers])
    found = committed_layers(snapshotter_root, namespace, chains)
    reused = []
    for (_, diff), chain in zip(layers, chains, strict=True):
        src = found.get(chain)
        final = ls.erofs_path(diff)
        if src is None or final.exists():
            continue
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{secrets.token_hex(4)}.erofs"
        try:
            try:
                os.link(src, tmp)
            except OSError:  # another filesystem (EXDEV), or links refused: copy
                shutil.copyfile(src, tmp)
            os.rename(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("layer %s: using the snapshotter's EROFS layer %s (chain %s)", diff, src, chain)
        reused.append(diff)
    return tuple(reused)


def push(client: ContainerdClient, root: Path, ref: str, *, name: str | None = None) -> PushResult:
    """Write runwasm's image ``ref`` into containerd (see module doc).

    Raises:
        ImageNotFoundError: no such image in runwasm's store.
        NotFoundError: a manifest, config or layer blob the image needs is missing.
    """
    from runwasm.oci.images import ImageStore

    cs = ContentStore(root)
    record = ImageStore(root).get(ref)
    plan: list[tuple[Descriptor, dict[str, str]]] = []
    _plan(cs, record.target, plan, depth=0)
    with client.lease("push") as lease:
        for desc, labels in plan:
            with _open_blob(cs, desc) as fh:
                client.write_stream(fh, desc.digest, desc.size, f"runwasm-push-{desc.digest.hex}", lease, labels)
            if labels:  # containerd ignores COMMIT labels for content it already had
                client.update_labels(desc.digest, labels)
        client.put_image(name or record.name, record.target, lease)
    return PushResult(name or record.name, record.target, len(plan))


def _open_blob(cs: ContentStore, desc: Descriptor) -> IO[bytes]:
    try:
        return cs.open(desc.digest)
    except NotFoundError as err:
        raise NotFoundError(f"failed to push {desc.media_type} {str(desc.digest)!r}: runwasm's store"
                            f" {str(cs.root)!r} does not hold it") from err


def _plan(cs: ContentStore, desc: Descriptor, out: list[tuple[Descriptor, dict[str, str]]], depth: int) -> None:
    """Append ``desc``'s children, then ``desc`` with its GC labels (post-order)."""
    from runwasm.oci.errors import InvalidArgumentError
    if depth > 4:
        raise InvalidArgumentError(f"failed to push {str(desc.digest)!r}: indexes nested deeper than 4")
    labels: dict[str, str] = {}
    if desc.media_type in (mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST):
        index = Index.from_json(_read(cs, desc), desc.digest)
        for i, child in enumerate(index.manifests):
            if not cs.has(child.digest):
                log.info("push: skipping %s %s (not in the store: platform not imported)", child.media_type,
                         child.digest)
                continue
            _plan(cs, child, out, depth + 1)
            labels[f"{GC_REF}.m.{i}"] = str(child.digest)
    elif desc.media_type in (mt.OCI_MANIFEST, mt.DOCKER_MANIFEST):
        manifest = Manifest.from_json(_read(cs, desc), desc.digest)
        out.append((manifest.config, {}))
        labels[f"{GC_REF}.config"] = str(manifest.config.digest)
        for i, layer in enumerate(manifest.layers):
            out.append((layer, {}))
            labels[f"{GC_REF}.l.{i}"] = str(layer.digest)
    out.append((desc, labels))


def _read(cs: ContentStore, desc: Descriptor) -> bytes:
    try:
        return cs.read_bytes(desc.digest)
    except NotFoundError as err:
        raise NotFoundError(f"failed to push {desc.media_type} {str(desc.digest)!r}: runwasm's store"
                            f" {str(cs.root)!r} does not hold it") from err
