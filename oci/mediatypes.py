"""Media type constants and classification helpers (OCI image-spec, Docker, EROFS, Wasm).

All media-type strings used by ``runwasm.oci`` live here. Docker v2 schema 2 types are accepted
as aliases of their OCI equivalents; ``canonical()`` maps an alias to the OCI string.
"""

from __future__ import annotations

from enum import Enum

from runwasm.oci.errors import UnsupportedMediaTypeError

# --- OCI image-spec ---------------------------------------------------------------------------
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_TAR_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_TAR_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYOUT_VERSION = "1.0.0"

# --- Docker v2 schema 2 (aliases) ------------------------------------------------------------
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"

# --- EROFS (containerd 2.3 core/images/mediatypes.go) ----------------------------------------
EROFS_LAYER = "application/vnd.erofs.layer.v1"
EROFS_LAYER_ZSTD = "application/vnd.erofs.layer.v1+zstd"
EROFS_LAYER_PREFIX = "application/vnd.erofs.layer"

# --- Wasm -------------------------------------------------------------------------------------
WASM_MODULE = "application/wasm"
WASM_COMPONENT_LAYER = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"
WASM_CONFIG = "application/vnd.wasm.config.v0+json"

# --- Annotations ------------------------------------------------------------------------------
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"

_ALIASES = {
    DOCKER_MANIFEST_LIST: OCI_INDEX,
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_CONFIG: OCI_CONFIG,
    DOCKER_LAYER_GZIP: OCI_LAYER_TAR_GZIP,
    DOCKER_LAYER_FOREIGN_GZIP: OCI_LAYER_TAR_GZIP,
    DOCKER_LAYER_TAR: OCI_LAYER_TAR,
    OCI_LAYER_NONDIST_TAR: OCI_LAYER_TAR,
    OCI_LAYER_NONDIST_TAR_GZIP: OCI_LAYER_TAR_GZIP,
    OCI_LAYER_NONDIST_TAR_ZSTD: OCI_LAYER_TAR_ZSTD,
}

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG, WASM_CONFIG})


class LayerKind(Enum):
    """How a layer blob is turned into a filesystem (or kept as a module)."""

    TAR = "tar"  # uncompressed tar
    TAR_GZIP = "tar+gzip"
    TAR_ZSTD = "tar+zstd"
    EROFS = "erofs"  # native EROFS image, used as is
    EROFS_ZSTD = "erofs+zstd"  # zstd-wrapped native EROFS image
    WASM = "wasm"  # a Wasm module or component, kept as a file, not unpacked

    @property
    def is_tar(self) -> bool:
        return self in (LayerKind.TAR, LayerKind.TAR_GZIP, LayerKind.TAR_ZSTD)

    @property
    def is_erofs(self) -> bool:
        return self in (LayerKind.EROFS, LayerKind.EROFS_ZSTD)


_LAYER_KINDS = {
    OCI_LAYER_TAR: LayerKind.TAR,
    OCI_LAYER_TAR_GZIP: LayerKind.TAR_GZIP,
    OCI_LAYER_TAR_ZSTD: LayerKind.TAR_ZSTD,
    EROFS_LAYER: LayerKind.EROFS,
    EROFS_LAYER_ZSTD: LayerKind.EROFS_ZSTD,
    WASM_MODULE: LayerKind.WASM,
    WASM_COMPONENT_LAYER: LayerKind.WASM,
}


def canonical(media_type: str) -> str:
    """Return the OCI media type for a Docker (or non-distributable) alias; others unchanged."""
    return _ALIASES.get(media_type, media_type)


def is_index(media_type: str) -> bool:
    return media_type in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFEST_TYPES


def is_erofs(media_type: str) -> bool:
    """True for anything starting with ``application/vnd.erofs.layer`` (containerd's rule)."""
    return media_type.startswith(EROFS_LAYER_PREFIX)


def layer_kind(media_type: str) -> LayerKind:
    """Classify a layer media type.

    Raises:
        UnsupportedMediaTypeError: the type is not a layer type runwasm can apply, including
            EROFS suffixes other than ``+zstd`` (containerd refuses ``+gzip`` too).
    """
    kind = _LAYER_KINDS.get(canonical(media_type))
    if kind is None:
        if is_erofs(media_type):
            raise UnsupportedMediaTypeError(
                f"failed to classify layer: unsupported erofs layer suffix in {media_type!r}"
                f" (expected {EROFS_LAYER!r} or {EROFS_LAYER_ZSTD!r})")
        raise UnsupportedMediaTypeError(
            f"failed to classify layer: unsupported layer media type {media_type!r}")
    return kind
