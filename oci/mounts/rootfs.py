"""Assemble a container rootfs from a stored image, and take it down again.

Fallback ladder (first that the probed capabilities allow, or the one forced by ``mode``):

A ``erofs``  each layer as ``layer.erofs``, mounted file-backed (loop after ENOTBLK, which
             gives rung B automatically), stacked with overlayfs plus a writable upper;
C ``dirs``   each layer extracted (hardened) into ``layers/<diff id>/fs`` + overlayfs;
D ``flat``   every layer extracted into ``target_dir`` itself, whiteouts applied by deletion
             (no mount at all; slow but always works).

Per-container scratch lives in ``<root>/c/<container id>/`` (``l/<n>`` layer mountpoints,
``upper``, ``work``); the mount table (``table.MountTable``) is in ``state_dir``
(default ``<root>/mounts``). Wasm-module layers are skipped here; their blobs are reachable
through ``RootfsHandle.wasm_modules``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from runwasm.oci import mediatypes as mt
from runwasm.oci.compression import decompressed
from runwasm.oci.digest import Digest
from runwasm.oci.errors import FailedPreconditionError, InvalidArgumentError, UnavailableError
from runwasm.oci.image import Descriptor, Platform
from runwasm.oci.images import ImageStore
from runwasm.oci.layers import LayerStore
from runwasm.oci.mounts import syscalls
from runwasm.oci.mounts.capabilities import probe
from runwasm.oci.mounts.table import MountTable
from runwasm.oci.platforms import DEFAULT_PLATFORMS
from runwasm.oci.resolve import ResolvedImage, resolve
from runwasm.oci.store import ContentStore

log = logging.getLogger(__name__)
MODES = ("auto", "erofs", "dirs", "flat")


@dataclass
class RootfsHandle:
    """A prepared rootfs. ``release()`` undoes it (idempotent)."""

    container_id: str
    rootfs: Path
    method: str
    image: ResolvedImage
    table_path: Path
    wasm_modules: list[Path] = field(default_factory=list)

    def release(self) -> None:
        """Unmount and remove everything made for this rootfs (raises UnavailableError if busy)."""
        if self.table_path.exists():
            MountTable.load(self.table_path).undo()


def default_state_dir(root: Path) -> Path:
    return root / "mounts"


def _store(store: ContentStore | Path) -> ContentStore:
    return store if isinstance(store, ContentStore) else ContentStore(store)


def prepare_rootfs(store: ContentStore | Path, image: str | Descriptor, target_dir: Path, container_id: str, *,
                   state_dir: Path | None = None, mode: str = "auto", readonly: bool = False,
                   platforms: Sequence[Platform] = DEFAULT_PLATFORMS) -> RootfsHandle:
    """Mount (or build) the rootfs of ``image`` at ``target_dir`` for ``container_id``.

    Args:
        store: the content store (or its root directory).
        image: an image name in the store, or a manifest/index descriptor whose blobs are stored.
        target_dir: where the rootfs appears (created if missing; must be empty if it exists).
        state_dir: where the mount table goes (default ``<root>/mounts``).
        mode: ``auto`` (ladder), or force ``erofs``, ``dirs`` or ``flat``.
        readonly: no writable upper layer (overlay of lowers only).

    Raises:
        NotFoundError / InvalidArgumentError / DigestMismatchError: image or layer problems.
        FailedPreconditionError: a mount table for ``container_id`` exists, or target not empty.
        UnavailableError: the forced mode is not possible here.
    """
    if mode not in MODES:
        raise InvalidArgumentError(f"failed to prepare rootfs: mode {mode!r} not in {MODES}")
    cs = _store(store)
    root = cs.root
    target = ImageStore(root).get(image).target if isinstance(image, str) else image
    resolved = resolve(cs, target, platforms)
    table_path = (state_dir or default_state_dir(root)) / f"{container_id}.json"
    if table_path.exists():
        raise FailedPreconditionError(f"failed to prepare rootfs for {container_id!r}: already prepared"
                                      f" (mount table {str(table_path)!r} exists)")
    if target_dir.exists() and any(target_dir.iterdir()):
        raise FailedPreconditionError(f"failed to prepare rootfs at {str(target_dir)!r}: directory not empty")
    layers = fs_layers(resolved)
    wasm = [cs.path(x.digest) for x in resolved.manifest.layers if mt.layer_kind(x.media_type) is mt.LayerKind.WASM]
    chosen = _choose(mode, layers)
    table = MountTable(table_path)
    table.info = {"container_id": container_id, "method": chosen, "rootfs": str(target_dir),
                  "layers": ",".join(diff.hex for _, diff in layers)}
    table.save()
    try:
        table.made_dir(target_dir)
        cdir = table.made_dir(root / "c" / container_id)
        with cs.lock():
            ls = LayerStore(root)
            if chosen == "erofs":
                lowers_src = [ls.ensure_erofs(cs, d, diff) for d, diff in layers]
            elif chosen == "dirs":
                lowers_src = [ls.ensure_dir(cs, d, diff) for d, diff in layers]
        if chosen == "flat":
            table.made_tree(target_dir)
            _flatten(cs, layers, target_dir)
        else:
            if chosen == "erofs":
                lowers = []
                for i, img in enumerate(lowers_src):
                    mnt = table.made_dir(cdir / "l" / str(i))
                    table.will_mount(mnt)
                    table.info["erofs_mount"] = syscalls.mount_erofs_file(img, mnt).method
                    lowers.append(mnt)
            else:
                lowers = list(lowers_src)
            if not lowers:
                empty = table.made_dir(cdir / "empty")
                lowers = [empty]
            table.will_mount(target_dir)
            if readonly and len(lowers) == 1:  # overlayfs needs two lowers without an upper
                syscalls.bind_mount(lowers[0], target_dir, readonly=True)
            else:
                upper = work = None
                if not readonly:
                    upper, work = table.made_dir(cdir / "upper"), table.made_dir(cdir / "work")
                syscalls.mount_overlay(list(reversed(lowers)), target_dir, upper, work)
        table.save()
    except OSError as err:
        _undo_quietly(table, container_id)
        raise UnavailableError(f"failed to prepare rootfs for {container_id!r} ({chosen}): {err}") from err
    except BaseException:
        _undo_quietly(table, container_id)
        raise
    log.info("prepared rootfs for %s at %s via %s", container_id, target_dir, chosen)
    return RootfsHandle(container_id, target_dir, chosen, resolved, table_path, wasm)


def _undo_quietly(table: MountTable, container_id: str) -> None:
    try:
        table.undo()
    except Exception:
        log.exception("failed to undo partial rootfs for %s", container_id)


def in_use_layers(state_dir: Path) -> set[str]:
    """Diff-ID hex strings of layers used by any recorded rootfs (GC must keep them)."""
    used: set[str] = set()
    for path in state_dir.glob("*.json"):
        try:
            used.update(x for x in MountTable.load(path).info.get("layers", "").split(",") if x)
        except InvalidArgumentError:
            log.warning("ignoring unreadable mount table %s", path)
    return used


def fs_layers(resolved: ResolvedImage) -> list[tuple[Descriptor, Digest]]:
    """(layer, diff id) for filesystem layers, bottom first. ``resolve`` checked that diff_ids
    cover either every layer or only the non-Wasm ones."""
    def is_fs(x: Descriptor) -> bool:
        return mt.layer_kind(x.media_type) is not mt.LayerKind.WASM

    layers, diff_ids = resolved.manifest.layers, resolved.config.diff_ids
    if len(diff_ids) == len(layers):
        return [(x, d) for x, d in zip(layers, diff_ids, strict=True) if is_fs(x)]
    return list(zip([x for x in layers if is_fs(x)], diff_ids, strict=True))


def _choose(mode: str, layers: list[tuple[Descriptor, Digest]]) -> str:
    caps = probe()
    has_native = any(mt.layer_kind(d.media_type).is_erofs for d, _ in layers)
    can_erofs = caps.erofs_file or caps.erofs_loop
    if mode == "erofs" and not (can_erofs and caps.overlay):
        raise UnavailableError(f"failed to prepare rootfs: EROFS+overlay mounts unavailable ({'; '.join(caps.notes)})")
    if mode == "dirs" and not caps.overlay:
        raise UnavailableError(f"failed to prepare rootfs: overlayfs unavailable ({'; '.join(caps.notes)})")
    if mode in ("dirs", "flat") and has_native:
        raise UnavailableError(f"failed to prepare rootfs: native EROFS layers need EROFS mounts (mode {mode!r})")
    if mode != "auto":
        return mode
    if can_erofs and caps.overlay:
        return "erofs"
    if has_native:
        raise UnavailableError(f"failed to prepare rootfs: image has native EROFS layers but EROFS cannot be"
                               f" mounted here ({'; '.join(caps.notes)})")
    return "dirs" if caps.overlay else "flat"


def _flatten(cs: ContentStore, layers: list[tuple[Descriptor, Digest]], target: Path) -> None:
    from runwasm.oci.compression import HashingReader
    from runwasm.oci.errors import DigestMismatchError
    from runwasm.oci.mounts.extract import extract_tar

    for desc, diff_id in layers:
        with cs.open(desc.digest) as blob:
            reader = HashingReader(decompressed(blob, mt.layer_kind(desc.media_type)))
            extract_tar(cast(IO[bytes], reader), target, overlay_whiteouts=False)
            reader.drain()
        if reader.digest != diff_id:
            raise DigestMismatchError(f"failed to flatten layer {str(desc.digest)!r}: diff id mismatch:"
                                      f" expected {str(diff_id)!r}, got {str(reader.digest)!r}")


def cleanup_recorded(state_dir: Path, container_id: str | None = None) -> list[str]:
    """Undo the recorded mount tables in ``state_dir`` (one container, or all of them).

    For ``delete`` of a dead shim / crash recovery. Returns the container ids cleaned.
    Raises UnavailableError if some mount stays busy (the other tables are still processed).
    """
    paths = [state_dir / f"{container_id}.json"] if container_id else sorted(state_dir.glob("*.json"))
    cleaned, errors = [], []
    for path in paths:
        if not path.exists():
            continue
        try:
            MountTable.load(path).undo()
            cleaned.append(path.stem)
        except (UnavailableError, InvalidArgumentError) as err:
            errors.append(str(err))
    if errors:
        raise UnavailableError("; ".join(errors))
    return cleaned
