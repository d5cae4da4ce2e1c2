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


class ImageNotFoundError(NotFoundError):
    """No image of that name in the store at ``root`` (front ends add how to fill it)."""

    def __init__(self, message: str, *, name: str, root: Path) -> None:
        super().__init__(message)
        self.name = name
        self.root = root


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """A named image: ``name`` is a normalised reference string."""

    name: str
    target: Descriptor


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
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
        """Look up by name, normalised as containerd does (``hello`` and ``docker.io/hello`` find
        ``docker.io/library/hello:latest``; ``demo/x`` finds ``docker.io/demo/x:latest``), then
        as written (records named before normalisation).

        Raises:
            ImageNotFoundError: no record; the message names the store searched.
            InvalidArgumentError: ``name`` is not a valid reference and no record has it verbatim.
        """
        path = self._file(name)
        if path.exists():
            return self._load(path)
        normal = str(Reference.parse(name))
        path = self._file(normal)
        if path.exists():
            return self._load(path)
        also = f" (normalised: {normal!r})" if normal != name else ""
        raise ImageNotFoundError(
            f"failed to get image {name!r}{also}: not found in the image store {str(self.root)!r}",
            name=name, root=self.root)

    def _load(self, path: Path) -> ImageRecord:
        obj = loads_object(path.read_bytes())
        return ImageRecord(req_str(obj, "name", ""), Descriptor.from_obj(as_object(obj["target"], "target"), "target"))

    def list(self) -> list[ImageRecord]:
        return sorted((self._load(p) for p in self.dir.glob("*.json")), key=lambda r: r.name)

    def delete(self, name: str) -> ImageRecord:
        record = self.get(name)
        self._file(record.name).unlink()
        return record
