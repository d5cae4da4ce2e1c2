"""The snapshot table of the runwasm snapshotter: pure state, no I/O.

Semantics follow containerd's ``snapshots.Snapshotter`` contract (core/snapshots/snapshotter.go
and the storage package its own snapshotters share):

* keys are opaque, unique strings; every snapshot also gets a small integer ``id`` that names
  its files on disk (keys are too long and arbitrary for paths and mount options);
* ``Prepare``/``View`` need an absent key and, when a parent is named, a *committed* parent;
* ``Commit`` turns an *active* snapshot into a committed one under a new name (labels replaced
  by the commit's labels), keeping its id;
* ``Remove`` refuses a snapshot that is some other snapshot's parent;
* ``Update`` may change labels only: no mask or ``labels`` replaces them all, ``labels.<k>``
  sets or deletes one label; any other path is refused.

Every change returns a new ``Snapshot`` value; the caller persists ``to_json()`` atomically.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from runwasm.oci.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)

FORMAT_VERSION = 1
MAX_LABEL_BYTES = 4096  # containerd: a key/value pair cannot exceed 4096 bytes


class Kind(enum.IntEnum):
    """Numbered as containerd.services.snapshots.v1.Kind."""

    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3


@dataclass(frozen=True, slots=True)
class Snapshot:
    key: str
    id: int
    kind: Kind
    parent: str = ""
    created_ns: int = 0
    updated_ns: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    inodes: int = 0  # committed: inodes in its EROFS image


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    for k, v in labels.items():
        if not k:
            raise InvalidArgumentError("invalid snapshot label: empty key")
        if len(k.encode()) + len(v.encode()) > MAX_LABEL_BYTES:
            raise InvalidArgumentError(f"invalid snapshot label {k!r}: key and value exceed {MAX_LABEL_BYTES} bytes")
    return dict(labels)


class SnapshotTable:
    """All snapshots by key, and the next free id."""

    def __init__(self, snapshots: Iterable[Snapshot] = (), next_id: int = 1) -> None:
        self.by_key: dict[str, Snapshot] = {s.key: s for s in snapshots}
        self.next_id = max([next_id, *(s.id + 1 for s in self.by_key.values())])

    # --- queries ----------------------------------------------------------------------------

    def get(self, key: str) -> Snapshot:
        snap = self.by_key.get(key)
        if snap is None:
            raise NotFoundError(f"snapshot {key!r} does not exist")
        return snap

    def chain(self, key: str) -> list[Snapshot]:
        """The committed ancestors of ``key``, nearest first (overlay lowerdir order)."""
        out = []
        parent = self.get(key).parent
        while parent:
            snap = self.get(parent)
            out.append(snap)
            parent = snap.parent
        return out

    def children(self, key: str) -> list[str]:
        return sorted(s.key for s in self.by_key.values() if s.parent == key)

    def ids(self) -> set[int]:
        return {s.id for s in self.by_key.values()}

    # --- changes ----------------------------------------------------------------------------

    def create(self, key: str, parent: str, kind: Kind, labels: Mapping[str, str], now_ns: int) -> Snapshot:
        if not key:
            raise InvalidArgumentError("failed to create snapshot: empty key")
        if key in self.by_key:
            raise AlreadyExistsError(f"failed to create snapshot {key!r}: already exists")
        if parent:
            p = self.by_key.get(parent)
            if p is None:
                raise NotFoundError(f"failed to create snapshot {key!r}: parent {parent!r} does not exist")
            if p.kind is not Kind.COMMITTED:
                raise InvalidArgumentError(f"failed to create snapshot {key!r}: parent {parent!r} is not a"
                                           f" committed snapshot (it is {p.kind.name.lower()})")
        snap = Snapshot(key, self.next_id, kind, parent, now_ns, now_ns, check_labels(labels))
        self.next_id += 1
        self.by_key[key] = snap
        return snap

    def check_commit(self, name: str, key: str) -> Snapshot:
        """The active snapshot ``key`` that may be committed as ``name`` (raises otherwise)."""
        snap = self.get(key)
        if snap.kind is not Kind.ACTIVE:
            raise FailedPreconditionError(f"failed to commit snapshot {key!r}: it is {snap.kind.name.lower()},"
                                          " not active")
        if not name:
            raise InvalidArgumentError(f"failed to commit snapshot {key!r}: empty name")
        if name in self.by_key:
            raise AlreadyExistsError(f"failed to commit snapshot {key!r} as {name!r}: {name!r} already exists")
        return snap

    def commit(self, name: str, key: str, labels: Mapping[str, str], inodes: int, now_ns: int) -> Snapshot:
        snap = self.check_commit(name, key)
        done = replace(snap, key=name, kind=Kind.COMMITTED, labels=check_labels(labels), inodes=inodes,
                       updated_ns=now_ns)
        del self.by_key[key]
        self.by_key[name] = done
        return done

    def check_remove(self, key: str) -> Snapshot:
        snap = self.get(key)
        kids = self.children(key)
        if kids:
            raise FailedPreconditionError(f"failed to remove snapshot {key!r}: it is the parent of {kids!r}")
        return snap

    def remove(self, key: str) -> Snapshot:
        snap = self.check_remove(key)
        del self.by_key[key]
        return snap

    def update(self, key: str, labels: Mapping[str, str], paths: Iterable[str], now_ns: int) -> Snapshot:
        snap = self.get(key)
        paths = list(paths)
        new = dict(snap.labels)
        if not paths or "labels" in paths:
            new = dict(labels)
        for p in paths:
            if p == "labels":
                continue
            if p.startswith("labels."):
                k = p[len("labels."):]
                if k in labels:
                    new[k] = labels[k]
                else:
                    new.pop(k, None)
                continue
            raise InvalidArgumentError(f"failed to update snapshot {key!r}: cannot update field {p!r}"
                                       " (only labels and labels.<key> are mutable)")
        done = replace(snap, labels=check_labels(new), updated_ns=now_ns)
        self.by_key[key] = done
        return done

    # --- persistence ------------------------------------------------------------------------

    def to_json(self) -> bytes:
        return json.dumps({
            "version": FORMAT_VERSION, "next_id": self.next_id,
            "snapshots": [{"key": s.key, "id": s.id, "kind": s.kind.name.lower(), "parent": s.parent,
                           "created_ns": s.created_ns, "updated_ns": s.updated_ns, "labels": dict(s.labels),
                           "inodes": s.inodes} for s in sorted(self.by_key.values(), key=lambda s: s.id)],
        }, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, what: str) -> SnapshotTable:
        try:
            doc: Any = json.loads(data)
            if doc.get("version") != FORMAT_VERSION:
                raise InvalidArgumentError(f"failed to load {what}: format version {doc.get('version')!r},"
                                           f" expected {FORMAT_VERSION}")
            snaps = [Snapshot(str(s["key"]), int(s["id"]), Kind[str(s["kind"]).upper()], str(s["parent"]),
                              int(s["created_ns"]), int(s["updated_ns"]),
                              {str(k): str(v) for k, v in s["labels"].items()}, int(s.get("inodes", 0)))
                     for s in doc["snapshots"]]
            return cls(snaps, int(doc["next_id"]))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise InvalidArgumentError(f"failed to load {what}: {err!r}") from err
