"""The runwasm snapshotter's store: the snapshot table on disk, EROFS layers, their mounts.

Layout under ``root`` (kept short: overlay's ``lowerdir=a:b:...`` must fit one page when the
runc shim mounts it with mount(2)):

* ``metadata.json``: the ``SnapshotTable``, replaced atomically (write, fsync, rename, fsync dir)
  after every change, so the store survives a SIGKILL of the daemon and a restart of containerd;
* ``s/<id>/fs`` and ``s/<id>/work``: an active snapshot's overlay upper and work dirs (a view
  gets an empty ``fs``); ``s/<id>/layer.erofs``: a committed snapshot's EROFS image, written by
  runwasm's own tar/dir -> EROFS writer (no mkfs.erofs); ``s/<id>/applied.erofs``: an active
  snapshot's layer already converted by the Diff service (``apply_tar``), taken as is by Commit;
* ``m/<id>``: where a committed layer's EROFS image is mounted (file-backed, loop fallback) in
  the daemon's mount namespace, lazily, the first time a snapshot that stacks on it needs mounts;
  unmounted by ``remove`` and ``cleanup`` (the store keeps the mounts in its care).

Mounts returned (what containerd hands to the runc shim or runwasm, which mount them with
mount(2)): an active snapshot without parent is an ``rbind`` of its ``fs``; with parents an
``overlay`` whose lowerdirs are the parents' mounted EROFS dirs (nearest first). A view of one
parent is a read-only bind of that layer's mount; of several, a lowerdir-only overlay.

Commit converts the upper dir (what containerd's walking differ extracted into it, whiteouts
already in overlay form) into ``layer.erofs``, or takes ``applied.erofs``. On any error the
temporary file is removed and the snapshot stays active. All public methods hold one lock.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import time
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from runwasm.oci.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from runwasm.oci.mediatypes import LayerKind
from runwasm.oci.snapshotter.filters import compile_filters
from runwasm.oci.snapshotter.meta import Kind, Snapshot, SnapshotTable
from runwasm.oci.store import fsync_dir

log = logging.getLogger(__name__)
META = "metadata.json"
LAYER = "layer.erofs"
APPLIED = "applied.erofs"
MOUNT_DATA_MAX = 4096  # mount(2) copies one page of options


@dataclass(frozen=True, slots=True)
class MountSpec:
    """One containerd ``types.Mount``."""

    type: str
    source: str
    options: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Applied:
    """What ``apply_layer`` wrote: the uncompressed content's digest (the diff ID) and size."""

    diff_id: str
    size: int


@dataclass(frozen=True, slots=True)
class Usage:
    size: int
    inodes: int


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _du(path: Path) -> Usage:
    """Disk blocks and inodes under ``path`` (hard links counted once), without crossing mounts."""
    seen: set[tuple[int, int]] = set()
    size = 0
    root_dev = os.lstat(path).st_dev
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames, ""]:
            p = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(p)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            size += st.st_blocks * 512
        dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == root_dev]
    return Usage(size, len(seen))


class SnapshotStore:
    """Implements containerd's Snapshotter contract on a directory ``root`` (see module doc)."""

    def __init__(self, root: Path, *, clock: object = time.time_ns) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / "s").mkdir(exist_ok=True, mode=0o700)
        (self.root / "m").mkdir(exist_ok=True, mode=0o755)
        self._clock = clock
        self.lock = threading.RLock()
        meta = self.root / META
        self.table = SnapshotTable.from_json(meta.read_bytes(), str(meta)) if meta.exists() else SnapshotTable()

    # --- paths ------------------------------------------------------------------------------

    def sdir(self, snap: Snapshot) -> Path:
        return self.root / "s" / str(snap.id)

    def mountpoint(self, snap: Snapshot) -> Path:
        return self.root / "m" / str(snap.id)

    def _now(self) -> int:
        now: int = self._clock()  # type: ignore[operator]
        return now

    def _save(self) -> None:
        atomic_write(self.root / META, self.table.to_json())

    # --- snapshot lifecycle -----------------------------------------------------------------

    def prepare(self, key: str, parent: str, labels: Mapping[str, str]) -> list[MountSpec]:
        return self._create(key, parent, labels, Kind.ACTIVE)

    def view(self, key: str, parent: str, labels: Mapping[str, str]) -> list[MountSpec]:
        return self._create(key, parent, labels, Kind.VIEW)

    def _create(self, key: str, parent: str, labels: Mapping[str, str], kind: Kind) -> list[MountSpec]:
        with self.lock:
            snap = self.table.create(key, parent, kind, labels, self._now())
            d = self.sdir(snap)
            try:
                if d.exists():  # an id reused after a crash between file removal and save
                    shutil.rmtree(d)
                d.mkdir(mode=0o755)
                (d / "fs").mkdir(mode=0o755)
                if kind is Kind.ACTIVE:
                    (d / "work").mkdir(mode=0o700)
                mounts = self._mounts(snap)
                self._save()
            except BaseException:
                self.table.by_key.pop(key, None)
                shutil.rmtree(d, ignore_errors=True)
                raise
            log.info("%s snapshot %r (id %d) on %r", kind.name.lower(), key, snap.id, parent)
            return mounts

    def mounts(self, key: str) -> list[MountSpec]:
        with self.lock:
            snap = self.table.get(key)
            if snap.kind is Kind.COMMITTED:
                raise FailedPreconditionError(f"failed to get mounts of snapshot {key!r}: it is committed"
                                              " (only active snapshots and views have mounts)")
            return self._mounts(snap)

    def _mounts(self, snap: Snapshot) -> list[MountSpec]:
        chain = self.table.chain(snap.key)
        lowers = [str(self.mountpoint(p)) for p in chain]
        joined = len(":".join(lowers)) + 200  # + workdir/upperdir/index options
        if joined >= MOUNT_DATA_MAX:
            raise FailedPreconditionError(
                f"failed to get mounts of snapshot {snap.key!r}: {len(lowers)} layers make an overlay option string"
                f" of about {joined} bytes; mount(2) (the runc shim) takes at most {MOUNT_DATA_MAX - 1}"
                " (use a shorter --root)")
        for p in chain:
            self.ensure_mounted(p)
        d = self.sdir(snap)
        if snap.kind is Kind.ACTIVE:
            if not lowers:
                return [MountSpec("bind", str(d / "fs"), ("rw", "rbind"))]
            return [MountSpec("overlay", "overlay", ("index=off", f"workdir={d / 'work'}", f"upperdir={d / 'fs'}",
                                                     f"lowerdir={':'.join(lowers)}"))]
        if not lowers:
            return [MountSpec("bind", str(d / "fs"), ("ro", "rbind"))]
        if len(lowers) == 1:
            return [MountSpec("bind", lowers[0], ("ro", "rbind"))]
        return [MountSpec("overlay", "overlay", ("index=off", f"lowerdir={':'.join(lowers)}"))]

    def ensure_mounted(self, snap: Snapshot) -> Path:
        """Mount a committed snapshot's EROFS image at ``m/<id>`` unless it already is."""
        from runwasm.oci.mounts import syscalls

        target = self.mountpoint(snap)
        if target.is_dir() and syscalls.is_mountpoint(target):
            return target
        image = self.sdir(snap) / LAYER
        if not image.is_file():
            raise NotFoundError(f"failed to mount layer of snapshot {snap.key!r}: {str(image)!r} is missing")
        target.mkdir(exist_ok=True)
        res = syscalls.mount_erofs_file(image, target)
        log.info("mounted layer %r (snapshot %r) at %r via %s", str(image), snap.key, str(target), res.method)
        return target

    def commit(self, name: str, key: str, labels: Mapping[str, str]) -> Snapshot:
        from runwasm.oci.erofs.reader import ErofsImage

        with self.lock:
            snap = self.table.check_commit(name, key)
            d = self.sdir(snap)
            final = d / LAYER
            applied = d / APPLIED
            if applied.exists():
                if any((d / "fs").iterdir()):
                    raise FailedPreconditionError(f"failed to commit snapshot {key!r}: a layer was applied by the"
                                                  " diff service and files were also written to its upper dir")
                os.rename(applied, final)
            else:
                self._dir_to_erofs(snap, final)
            with ErofsImage(final) as img:
                inodes = img.inos
            self.table.commit(name, key, labels, inodes, self._now())
            try:
                self._save()
            except BaseException:  # keep memory and disk in agreement: still active
                self.table.by_key.pop(name, None)
                self.table.by_key[key] = snap
                final.unlink(missing_ok=True)
                raise
            for sub in ("fs", "work"):
                shutil.rmtree(d / sub, ignore_errors=True)
            log.info("committed snapshot %r as %r (id %d, %d inodes)", key, name, snap.id, inodes)
            return self.table.get(name)

    def _dir_to_erofs(self, snap: Snapshot, final: Path) -> None:
        from runwasm.oci.erofs.from_dir import dir_to_erofs

        tmp = final.with_name(f".tmp-{LAYER}")
        tmp.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        try:
            dir_to_erofs(self.sdir(snap) / "fs", tmp, uuid=uuidlib.uuid5(uuidlib.NAMESPACE_URL,
                                                                          f"runwasm-snapshot:{snap.id}").bytes)
        except OSError as err:
            raise OSError(err.errno, f"failed to commit snapshot {snap.key!r}: failed to write EROFS image"
                                     f" {str(tmp)!r}: {err.strerror or err}") from err
        os.rename(tmp, final)
        fsync_dir(final.parent)

    def apply_layer(self, mounts: Sequence[MountSpec], blob: IO[bytes], kind: LayerKind,
                    blob_digest: str) -> Applied:
        """See ``runwasm.oci.snapshotter.apply.apply_layer``."""
        from runwasm.oci.snapshotter.apply import apply_layer

        with self.lock:
            return apply_layer(self, mounts, blob, kind, blob_digest)

    def snapshot_of_mounts(self, mounts: Sequence[MountSpec]) -> Snapshot:
        """The active snapshot whose mounts (as ``_mounts`` returned them) these are."""
        if len(mounts) == 1:
            m = mounts[0]
            upper = m.source if m.type == "bind" else next(
                (o[len("upperdir="):] for o in m.options if o.startswith("upperdir=")), "")
            p = Path(upper)
            if p.name == "fs" and p.parent.parent == self.root / "s" and p.parent.name.isdigit():
                sid = int(p.parent.name)
                for snap in self.table.by_key.values():
                    if snap.id == sid and snap.kind is Kind.ACTIVE:
                        return snap
        raise InvalidArgumentError(f"failed to apply layer: mounts {list(mounts)!r} are not an active snapshot of"
                                   f" the runwasm snapshotter at {str(self.root)!r}")

    def remove(self, key: str) -> None:
        from runwasm.oci.mounts import syscalls

        with self.lock:
            snap = self.table.check_remove(key)
            target = self.mountpoint(snap)
            if target.is_dir() and syscalls.is_mountpoint(target):
                try:
                    syscalls.umount(target)
                except OSError as err:
                    if err.errno == errno.EBUSY:
                        raise FailedPreconditionError(f"failed to remove snapshot {key!r}: its layer mount"
                                                      f" {str(target)!r} is busy") from err
                    raise
            # files first: they free the space that saving the table may need (a full disk);
            # a crash before the save leaves a table entry whose files are gone, which a
            # repeated Remove (containerd's GC retries) completes
            d = self.sdir(snap)
            if d.exists():
                trash = d.with_name(f".rm-{snap.id}")
                os.rename(d, trash)
                shutil.rmtree(trash)
            if target.is_dir():
                target.rmdir()
            self.table.remove(key)
            try:
                self._save()
            except BaseException:
                self.table.by_key[key] = snap
                raise
            log.info("removed snapshot %r (id %d)", key, snap.id)

    # --- queries ----------------------------------------------------------------------------

    def stat(self, key: str) -> Snapshot:
        with self.lock:
            return self.table.get(key)

    def update(self, key: str, labels: Mapping[str, str], paths: Sequence[str]) -> Snapshot:
        with self.lock:
            before = self.table.get(key)
            snap = self.table.update(key, labels, paths, self._now())
            try:
                self._save()
            except BaseException:
                self.table.by_key[key] = before
                raise
            return snap

    def walk(self, filters: Sequence[str] = ()) -> list[Snapshot]:
        match = compile_filters(filters)
        with self.lock:
            return [s for s in sorted(self.table.by_key.values(), key=lambda s: s.id) if match(s)]

    def usage(self, key: str) -> Usage:
        with self.lock:
            snap = self.table.get(key)
            d = self.sdir(snap)
            if snap.kind is Kind.COMMITTED:
                st = os.stat(d / LAYER)
                return Usage(st.st_blocks * 512, snap.inodes)
            u = _du(d / "fs")
            if (d / APPLIED).exists():
                st = os.stat(d / APPLIED)
                u = Usage(u.size + st.st_blocks * 512, u.inodes)
            return u

    def cleanup(self) -> list[str]:
        """Remove what no snapshot references: unknown ``s/<id>`` dirs, layer mounts of snapshots
        that are gone, leftovers of interrupted commits. Returns the paths removed."""
        from runwasm.oci.mounts import syscalls

        removed: list[str] = []
        with self.lock:
            by_id = {s.id: s for s in self.table.by_key.values()}
            for d in sorted((self.root / "m").iterdir()):
                snap = by_id.get(int(d.name)) if d.name.isdigit() else None
                if snap is not None and snap.kind is Kind.COMMITTED:
                    continue
                if syscalls.is_mountpoint(d):
                    syscalls.umount(d)
                d.rmdir()
                removed.append(str(d))
            for d in sorted((self.root / "s").iterdir()):
                snap = by_id.get(int(d.name)) if d.name.isdigit() else None
                if snap is None:
                    shutil.rmtree(d)
                    removed.append(str(d))
                    continue
                stale = list(d.glob(".tmp-*"))
                if snap.kind is Kind.COMMITTED:
                    stale += [p for p in (d / "fs", d / "work", d / APPLIED) if p.exists()]
                for p in stale:
                    if p.is_dir():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                    removed.append(str(p))
        if removed:
            log.info("cleanup removed %s", removed)
        return removed

    def unmount_all(self) -> list[str]:
        """Unmount every layer mount (for tests and a clean uninstall; the daemon keeps them)."""
        from runwasm.oci.mounts import syscalls

        out = []
        with self.lock:
            for d in sorted((self.root / "m").iterdir()):
                if syscalls.is_mountpoint(d):
                    syscalls.umount(d)
                    out.append(str(d))
        return out
