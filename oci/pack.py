"""Pack a Wasm module or component into an OCI image-layout tarball (``runwasm image pack-wasm``).

Three flavours (``fmt``), one manifest each, platform ``wasip1/wasm`` for a core module and
``wasip2/wasm`` for a component (config and index descriptor):

- ``tar`` (default): a gzip'd tar layer holding the module at ``/<stem>.wasm`` (so it lands in
  the rootfs containerd mounts) and ``Entrypoint ["/<stem>.wasm"]``. Runs under containerd
  1.6 and 2.3 alike.
- ``runwasi``: runwasi's flavour, an ordinary OCI image config with no filesystem layer
  (``rootfs.diff_ids`` empty) whose one layer is the raw module (``application/wasm``) or
  component (``application/vnd.bytecodealliance.wasm.component.layer.v0+wasm``);
  ``Entrypoint ["/<stem>.wasm"]`` (a path that is not in the rootfs: the shim runs the layer,
  read from containerd's content store, ``runwasm.shim.server.image_module``).
- ``artifact``: the CNCF Wasm OCI artifact: ``artifactType: application/wasm``, config
  ``application/vnd.wasm.config.v0+json`` (``architecture``, ``os``, ``layerDigests``,
  ``created``), one ``application/wasm`` layer. containerd's own client refuses to run its
  config type (``ctr run``); it is meant for CRI, and for ``runwasm run``.

containerd 1.6 ``ctr images import`` keeps only manifests matching the host platform ("image
might be filtered out"), and so does 2.3, so import with ``ctr images import --all-platforms``
(or ``--platform wasip1/wasm``); then ``ctr run REF ID`` needs no ``--platform``.

Output is deterministic: the same module, ref, args, env and format give the same bytes.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.errors import InvalidArgumentError, NotFoundError
from runwasm.oci.image import Descriptor, ExecConfig, ImageConfig, Index, Manifest, Platform
from runwasm.oci.jsonparse import dumps_canonical
from runwasm.oci.layout import deterministic_tarinfo, write_layout_tar
from runwasm.oci.reference import Reference

WASM_PLATFORM = Platform(os="wasip1", architecture="wasm")
COMPONENT_PLATFORM = Platform(os="wasip2", architecture="wasm")
WASM_MAGIC = b"\0asm"
MODULE_VERSION = b"\x01\0\0\0"  # core module binary version; components have layer 1 (b"\x0d\0\x01\0")
FORMATS = ("tar", "runwasi", "artifact")
CREATED = "1970-01-01T00:00:00Z"  # fixed, for deterministic output


@dataclass(frozen=True, slots=True)
class PackedImage:
    """What ``pack_wasm`` wrote: the normalised ref and the descriptors of its blobs."""

    ref: str
    manifest: Descriptor
    config: Descriptor
    layer: Descriptor
    diff_id: Digest
    entrypoint: str


def _layer_tar(name: str, module: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(deterministic_tarinfo(name, len(module), 0o755), io.BytesIO(module))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def pack_wasm(module_path: Path, out_tar: Path, ref: str, *, args: list[str] | None = None,
              env: list[str] | None = None, fmt: str = "tar") -> PackedImage:
    """Write an OCI image-layout tarball for one Wasm module or component.

    Args:
        module_path: the ``.wasm`` binary (must start with ``\\0asm``).
        out_tar: where to write the layout tarball (replaced atomically).
        ref: image reference; normalised (``hello`` -> ``docker.io/library/hello:latest``).
        args: extra arguments, stored as the config's ``Cmd`` (not in the ``artifact`` format).
        env: ``KEY=VALUE`` strings for the config's ``Env`` (not in the ``artifact`` format).
        fmt: ``tar``, ``runwasi`` or ``artifact`` (see module doc).

    Returns:
        PackedImage with the normalised ref and the manifest/config/layer descriptors.

    Raises:
        NotFoundError: the module does not exist.
        InvalidArgumentError: not a Wasm binary, bad ref, bad env entry, unknown format, or
            args/env with the ``artifact`` format (its config has no place for them).
    """
    where = f"failed to pack {str(module_path)!r}"
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"{where}: unknown format {fmt!r}, expected one of {list(FORMATS)}")
    reference = Reference.parse(ref)
    if reference.digest is not None or not reference.tag:
        raise InvalidArgumentError(f"{where}: reference {ref!r} needs a tag")
    try:
        module = module_path.read_bytes()
    except FileNotFoundError as err:
        raise NotFoundError(f"{where}: module not found") from err
    if module[:4] != WASM_MAGIC:
        raise InvalidArgumentError(f"{where}: not a Wasm binary (magic {module[:4]!r}, expected {WASM_MAGIC!r})")
    for item in env or []:
        if "=" not in item:
            raise InvalidArgumentError(f"{where}: env entry {item!r} is not KEY=VALUE")
    if fmt == "artifact" and (args or env):
        raise InvalidArgumentError(f"{where}: the artifact format has no Cmd/Env; drop --arg/--env "
                                   "(set them in the pod or container spec)")
    component = module[4:8] != MODULE_VERSION
    platform = COMPONENT_PLATFORM if component else WASM_PLATFORM
    name = module_path.stem + ".wasm"
    blobs: dict[Digest, bytes] = {}
    if fmt == "tar":
        layer_tar = _layer_tar(name, module)
        layer_bytes = _gzip(layer_tar)
        diff_id = Digest.of_bytes(layer_tar)
        layer = Descriptor(mt.OCI_LAYER_TAR_GZIP, Digest.of_bytes(layer_bytes), len(layer_bytes))
    else:
        layer_bytes = module
        diff_id = Digest.of_bytes(module)
        media = mt.WASM_COMPONENT_LAYER if component and fmt == "runwasi" else mt.WASM_MODULE
        layer = Descriptor(media, diff_id, len(module))
    blobs[layer.digest] = layer_bytes
    config_json: dict[str, Any]
    if fmt == "artifact":
        config_json = {"architecture": platform.architecture, "os": platform.os, "created": CREATED,
                       "layerDigests": [str(layer.digest)]}
        config_type = mt.WASM_CONFIG
    else:
        config = ImageConfig(
            architecture=platform.architecture, os=platform.os, diff_ids=(diff_id,) if fmt == "tar" else (),
            config=ExecConfig(env=tuple(env or ()), entrypoint=(f"/{name}",), cmd=tuple(args or ())),
            history=({"created_by": f"runwasm image pack-wasm --format {fmt} {name}"},))
        config_json = config.to_json()
        config_type = mt.OCI_CONFIG
    config_bytes = dumps_canonical(config_json)
    config_desc = Descriptor(config_type, Digest.of_bytes(config_bytes), len(config_bytes))
    blobs[config_desc.digest] = config_bytes
    manifest = Manifest(config=config_desc, layers=(layer,),
                        artifact_type=mt.WASM_MODULE if fmt == "artifact" else "")
    manifest_bytes = dumps_canonical(manifest.to_json())
    manifest_desc = Descriptor(
        mt.OCI_MANIFEST, Digest.of_bytes(manifest_bytes), len(manifest_bytes),
        annotations={mt.ANNOTATION_IMAGE_NAME: str(reference), mt.ANNOTATION_REF_NAME: reference.tag},
        platform=platform, artifact_type=manifest.artifact_type)
    blobs[manifest_desc.digest] = manifest_bytes
    write_layout_tar(out_tar, Index(manifests=(manifest_desc,)), blobs)
    return PackedImage(ref=str(reference), manifest=manifest_desc, config=config_desc, layer=layer,
                       diff_id=diff_id, entrypoint="" if fmt == "artifact" else f"/{name}")
