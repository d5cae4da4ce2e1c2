"""Image records (name -> target descriptor) under ``<root>/images``.

One JSON file per name, ``images/<sha256(name)[:32]>.json``, written atomically. The target
is the descriptor from the imported ``index.json`` (an index or a manifest); platform
resolution happens at use time (``resolve``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from runwasm.oci.errors import NotFoundError
from runwasm.oci.image import Descriptor
from runwasm.oci.jsonparse import as_object, dumps_canonical, loads_object, req_str
from runwasm.oci.reference import Reference


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """A named image: ``name`` is a normalised reference string."""

    name: str
    target: Descriptor


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.dir = root / "images"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _file(self, name: str) -> Path:
        return self.dir / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".json")

    def put(self, record: ImageRecord) -> None:
        """Create or replace the record for ``record.name`` (atomic)."""
        path = self._file(record.name)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(dumps_canonical({"name": record.name, "target": record.target.to_json()}))
        os.replace(tmp, path)

    def get(self, name: str) -> ImageRecord:
        """Look up by name (normalised first, so ``hello`` finds ``docker.io/library/hello:latest``)."""
        for candidate in (name, str(Reference.parse(name)) if "@" not in name else name):
            path = self._file(candidate)
            if path.exists():
                return self._load(path)
        raise NotFoundError(f"failed to get image {name!r}: not found")

    def _load(self, path: Path) -> ImageRecord:
        obj = loads_object(path.read_bytes())
        return ImageRecord(req_str(obj, "name", ""), Descriptor.from_obj(as_object(obj["target"], "target"), "target"))

    def list(self) -> list[ImageRecord]:
        return sorted((self._load(p) for p in self.dir.glob("*.json")), key=lambda r: r.name)

    def delete(self, name: str) -> ImageRecord:
        record = self.get(name)
        self._file(record.name).unlink()
        return record
