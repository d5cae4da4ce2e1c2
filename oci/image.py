"""Typed OCI image-spec models: descriptor, platform, index, manifest, image config.

Contract: every ``from_json`` takes decoded JSON (or raw bytes) and returns a frozen dataclass,
or raises ``InvalidArgumentError`` whose message names the document (and its digest when
known) and the JSON path, e.g.::

    failed to parse image manifest 'sha256:ab..': layers[0].digest: missing

``to_json`` returns a plain dict in the image-spec's field names; ``jsonparse.dumps_canonical``
turns it into deterministic bytes. Docker v2 schema 2 documents parse into the same classes
(their media types are kept as given; use ``mediatypes.canonical`` to compare).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.errors import InvalidArgumentError
from runwasm.oci.jsonparse import (
    JsonFieldError,
    JsonObject,
    as_object,
    join,
    loads_object,
    opt_list,
    opt_object,
    opt_str,
    opt_str_list,
    opt_str_map,
    req_int,
    req_str,
)

T = TypeVar("T")


def _parse_doc(kind: str, data: bytes | str | JsonObject, digest: Digest | str | None,
               parse: Callable[[JsonObject, str], T]) -> T:
    where = f" {str(digest)!r}" if digest is not None else ""
    try:
        obj = data if not isinstance(data, bytes | str) else loads_object(data)
        return parse(as_object(obj, "$"), "")
    except JsonFieldError as err:
        raise InvalidArgumentError(f"failed to parse {kind}{where}: {err}") from err


def _digest_at(obj: JsonObject, key: str, path: str) -> Digest:
    text = req_str(obj, key, path)
    try:
        return Digest.parse(text)
    except InvalidArgumentError as err:
        raise JsonFieldError(join(path, key), str(err)) from err


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in (None, "", [], {}, ())}


@dataclass(frozen=True, slots=True)
class Platform:
    """``os``/``architecture`` plus optional variant, os.version and os.features."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]`` as ``ctr --platform`` does."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidArgumentError(f"failed to parse platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def from_obj(cls, obj: JsonObject, path: str) -> Platform:
        return cls(os=req_str(obj, "os", path), architecture=req_str(obj, "architecture", path),
                   variant=opt_str(obj, "variant", path), os_version=opt_str(obj, "os.version", path),
                   os_features=opt_str_list(obj, "os.features", path))

    def to_json(self) -> dict[str, Any]:
        return _drop_empty({"architecture": self.architecture, "os": self.os,
                            "os.version": self.os_version, "os.features": list(self.os_features),
                            "variant": self.variant})

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str = ""

    @classmethod
    def from_obj(cls, obj: JsonObject, path: str) -> Descriptor:
        size = req_int(obj, "size", path)
        if size < 0:
            raise JsonFieldError(join(path, "size"), f"expected size >= 0, got {size}")
        plat = opt_object(obj, "platform", path)
        return cls(media_type=req_str(obj, "mediaType", path), digest=_digest_at(obj, "digest", path),
                   size=size, annotations=opt_str_map(obj, "annotations", path),
                   platform=Platform.from_obj(plat, join(path, "platform")) if plat else None,
                   urls=opt_str_list(obj, "urls", path),
                   artifact_type=opt_str(obj, "artifactType", path))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest),
                               "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out


def _descriptors(obj: JsonObject, key: str, path: str) -> tuple[Descriptor, ...]:
    items = opt_list(obj, key, path)
    return tuple(Descriptor.from_obj(as_object(it, join(join(path, key), i)), join(join(path, key), i))
                 for i, it in enumerate(items))


def _schema_version(obj: JsonObject, path: str) -> int:
    version = req_int(obj, "schemaVersion", path)
    if version != 2:
        raise JsonFieldError(join(path, "schemaVersion"), f"expected 2, got {version}")
    return version


@dataclass(frozen=True, slots=True)
class Index:
    """An image index (``index.json`` of a layout, or a manifest list)."""

    manifests: tuple[Descriptor, ...]
    media_type: str = mt.OCI_INDEX
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: bytes | str | JsonObject, digest: Digest | str | None = None) -> Index:
        def parse(obj: JsonObject, path: str) -> Index:
            _schema_version(obj, path)
            media_type = opt_str(obj, "mediaType", path, mt.OCI_INDEX)
            if not mt.is_index(media_type):
                raise JsonFieldError(join(path, "mediaType"), f"expected an index type, got {media_type!r}")
            return cls(manifests=_descriptors(obj, "manifests", path), media_type=media_type,
                       annotations=opt_str_map(obj, "annotations", path))
        return _parse_doc("image index", data, digest, parse)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type,
                               "manifests": [d.to_json() for d in self.manifests]}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest: one config descriptor and the ordered layers (bottom first)."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = mt.OCI_MANIFEST
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str = ""

    @classmethod
    def from_json(cls, data: bytes | str | JsonObject, digest: Digest | str | None = None) -> Manifest:
        def parse(obj: JsonObject, path: str) -> Manifest:
            _schema_version(obj, path)
            media_type = opt_str(obj, "mediaType", path, mt.OCI_MANIFEST)
            if not mt.is_manifest(media_type):
                raise JsonFieldError(join(path, "mediaType"), f"expected a manifest type, got {media_type!r}")
            cpath = join(path, "config")
            if obj.get("config") is None:
                raise JsonFieldError(cpath, "missing")
            config = Descriptor.from_obj(as_object(obj["config"], cpath), cpath)
            return cls(config=config, layers=_descriptors(obj, "layers", path), media_type=media_type,
                       annotations=opt_str_map(obj, "annotations", path),
                       artifact_type=opt_str(obj, "artifactType", path))
        return _parse_doc("image manifest", data, digest, parse)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type,
                               "config": self.config.to_json(),
                               "layers": [d.to_json() for d in self.layers]}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True, slots=True)
class ExecConfig:
    """The ``config`` member of an image config: defaults for the container process."""

    user: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""

    @classmethod
    def from_obj(cls, obj: JsonObject, path: str) -> ExecConfig:
        return cls(user=opt_str(obj, "User", path), env=opt_str_list(obj, "Env", path),
                   entrypoint=opt_str_list(obj, "Entrypoint", path), cmd=opt_str_list(obj, "Cmd", path),
                   working_dir=opt_str(obj, "WorkingDir", path),
                   labels=opt_str_map(obj, "Labels", path), stop_signal=opt_str(obj, "StopSignal", path))

    def to_json(self) -> dict[str, Any]:
        return _drop_empty({"User": self.user, "Env": list(self.env),
                            "Entrypoint": list(self.entrypoint), "Cmd": list(self.cmd),
                            "WorkingDir": self.working_dir, "Labels": dict(self.labels),
                            "StopSignal": self.stop_signal})

    @property
    def argv(self) -> tuple[str, ...]:
        """Entrypoint followed by Cmd, as a runtime builds process.args."""
        return self.entrypoint + self.cmd


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """An image configuration (``application/vnd.oci.image.config.v1+json``)."""

    architecture: str
    os: str
    diff_ids: tuple[Digest, ...]
    config: ExecConfig = field(default_factory=ExecConfig)
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()
    created: str = ""
    author: str = ""
    history: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_json(cls, data: bytes | str | JsonObject, digest: Digest | str | None = None) -> ImageConfig:
        def parse(obj: JsonObject, path: str) -> ImageConfig:
            rootfs = opt_object(obj, "rootfs", path)
            rpath = join(path, "rootfs")
            if rootfs and opt_str(rootfs, "type", rpath, "layers") != "layers":
                raise JsonFieldError(join(rpath, "type"), f"expected 'layers', got {rootfs['type']!r}")
            diff_ids = []
            for i, item in enumerate(opt_list(rootfs, "diff_ids", rpath)):
                ipath = join(join(rpath, "diff_ids"), i)
                if not isinstance(item, str):
                    raise JsonFieldError(ipath, "expected string")
                try:
                    diff_ids.append(Digest.parse(item))
                except InvalidArgumentError as err:
                    raise JsonFieldError(ipath, str(err)) from err
            history = tuple(dict(as_object(h, join(join(path, "history"), i)))
                            for i, h in enumerate(opt_list(obj, "history", path)))
            return cls(architecture=req_str(obj, "architecture", path), os=req_str(obj, "os", path),
                       diff_ids=tuple(diff_ids),
                       config=ExecConfig.from_obj(opt_object(obj, "config", path), join(path, "config")),
                       variant=opt_str(obj, "variant", path), os_version=opt_str(obj, "os.version", path),
                       os_features=opt_str_list(obj, "os.features", path),
                       created=opt_str(obj, "created", path), author=opt_str(obj, "author", path),
                       history=history)
        return _parse_doc("image config", data, digest, parse)

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant, self.os_version, self.os_features)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _drop_empty({
            "architecture": self.architecture, "os": self.os, "variant": self.variant,
            "os.version": self.os_version, "os.features": list(self.os_features),
            "created": self.created, "author": self.author, "config": self.config.to_json(),
            "history": [dict(h) for h in self.history]})
        out["rootfs"] = {"type": "layers", "diff_ids": [str(d) for d in self.diff_ids]}
        return out

