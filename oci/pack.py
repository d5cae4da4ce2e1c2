"""Pack a Wasm module into a single-layer OCI image-layout tarball (``runwasm image pack-wasm``).

The image has one manifest, one config and one layer: a gzip'd tar holding the module at
``/<stem>.wasm`` (so it lands in the rootfs containerd mounts), with ``Entrypoint`` set to
``["/<stem>.wasm"]``. The platform is ``wasip1/wasm`` (config and index descriptor), as
runwasi's images use. containerd 1.6 ``ctr images import`` keeps only manifests matching the
host platform ("image might be filtered out"), so import with
``ctr images import --all-platforms IMAGE.tar`` (or ``--platform wasip1/wasm``); after that
``ctr run REF ID`` needs no ``--platform`` (tested with containerd 1.6.20).

Output is deterministic: the same module, ref, args and env give the same bytes.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.errors import InvalidArgumentError, NotFoundError
from runwasm.oci.image import Descriptor, ExecConfig, ImageConfig, Index, Manifest, Platform
from runwasm.oci.jsonparse import dumps_canonical
from runwasm.oci.layout import deterministic_tarinfo, write_layout_tar
from runwasm.oci.reference import Reference

WASM_PLATFORM = Platform(os="wasip1", architecture="wasm")
WASM_MAGIC = b"\0asm"


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
              env: list[str] | None = None) -> PackedImage:
    """Write an OCI image-layout tarball for one Wasm module.

    Args:
        module_path: the ``.wasm`` module (binary; must start with ``\\0asm``).
        out_tar: where to write the layout tarball (replaced atomically).
        ref: image reference; normalised (``hello`` -> ``docker.io/library/hello:latest``).
        args: extra arguments, stored as the config's ``Cmd``.
        env: ``KEY=VALUE`` strings for the config's ``Env``.

    Returns:
        PackedImage with the normalised ref and the manifest/config/layer descriptors.

    Raises:
        NotFoundError: the module does not exist.
        InvalidArgumentError: not a Wasm binary, bad ref, or bad env entry.
    """
    reference = Reference.parse(ref)
    if reference.digest is not None or not reference.tag:
        raise InvalidArgumentError(f"failed to pack {str(module_path)!r}: reference {ref!r} needs a tag")
    try:
        module = module_path.read_bytes()
    except FileNotFoundError as err:
        raise NotFoundError(f"failed to pack {str(module_path)!r}: module not found") from err
    if module[:4] != WASM_MAGIC:
        raise InvalidArgumentError(
            f"failed to pack {str(module_path)!r}: not a Wasm binary (magic {module[:4]!r}, expected {WASM_MAGIC!r})")
    for item in env or []:
        if "=" not in item:
            raise InvalidArgumentError(f"failed to pack {str(module_path)!r}: env entry {item!r} is not KEY=VALUE")
    name = module_path.stem + ".wasm"
    layer_tar = _layer_tar(name, module)
    layer_gz = _gzip(layer_tar)
    diff_id = Digest.of_bytes(layer_tar)
    layer = Descriptor(mt.OCI_LAYER_TAR_GZIP, Digest.of_bytes(layer_gz), len(layer_gz))
    config = ImageConfig(
        architecture=WASM_PLATFORM.architecture, os=WASM_PLATFORM.os, diff_ids=(diff_id,),
        config=ExecConfig(env=tuple(env or ()), entrypoint=(f"/{name}",), cmd=tuple(args or ())),
        history=({"created_by": f"runwasm image pack-wasm {name}"},))
    config_bytes = dumps_canonical(config.to_json())
    config_desc = Descriptor(mt.OCI_CONFIG, Digest.of_bytes(config_bytes), len(config_bytes))
    manifest = Manifest(config=config_desc, layers=(layer,))
    manifest_bytes = dumps_canonical(manifest.to_json())
    manifest_desc = Descriptor(
        mt.OCI_MANIFEST, Digest.of_bytes(manifest_bytes), len(manifest_bytes),
        annotations={mt.ANNOTATION_IMAGE_NAME: str(reference), mt.ANNOTATION_REF_NAME: reference.tag},
        platform=WASM_PLATFORM)
    index = Index(manifests=(manifest_desc,))
    write_layout_tar(out_tar, index, {layer.digest: layer_gz, config_desc.digest: config_bytes,
                                      manifest_desc.digest: manifest_bytes})
    return PackedImage(ref=str(reference), manifest=manifest_desc, config=config_desc, layer=layer,
                       diff_id=diff_id, entrypoint=f"/{name}")
