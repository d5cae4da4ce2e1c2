"""Which layer of a Wasm OCI image runs: pure selection over any ``BlobSource``.

The three Wasm image flavours runwasm knows (``runwasm image pack-wasm --format``):

- ``runwasi``: an ordinary OCI image config (``architecture: wasm``, ``os: wasip1``/``wasip2``/
  ``wasi``, ``rootfs.diff_ids`` without the Wasm layers) whose layers are the raw module
  (``application/wasm``) or component (``application/vnd.bytecodealliance.wasm.component.layer.v0+wasm``);
- ``artifact``: the CNCF Wasm OCI artifact (config ``application/vnd.wasm.config.v0+json``,
  ``artifactType: application/wasm``, one ``application/wasm`` layer);
- ``tar``: a tar layer holding the module as a file (the rootfs has it; nothing to select).

``select_wasm_layer`` resolves the target for the Wasm platform and returns the Wasm layer
that runs (the last one, as ``runwasm.oci.wasm_module`` does), or None when the image has no
Wasm-typed layer (the ``tar`` flavour, or a Linux image). Errors (no Wasm platform in the
index, a missing or corrupt blob) propagate: callers say why a module could not be found.
"""

from __future__ import annotations

from dataclasses import dataclass

from runwasm.oci import mediatypes as mt
from runwasm.oci.image import Descriptor
from runwasm.oci.platforms import WASM
from runwasm.oci.resolve import BlobSource, resolve


@dataclass(frozen=True, slots=True)
class WasmLayer:
    """The Wasm layer chosen from an image.

    manifest: the manifest descriptor it came from; config_media_type: its config's type (tells
    the ``artifact`` flavour apart); layer: the layer descriptor (its digest is the sha256 of the
    module bytes, the layer being the raw module).
    """

    manifest: Descriptor
    config_media_type: str
    layer: Descriptor

    @property
    def flavour(self) -> str:
        return "artifact" if self.config_media_type == mt.WASM_CONFIG else "runwasi"


def wasm_layers(source: BlobSource, target: Descriptor) -> tuple[Descriptor, tuple[Descriptor, ...], str]:
    """(manifest descriptor, its Wasm-typed layers in order, config media type) of ``target``."""
    res = resolve(source, target, (WASM,))
    layers = tuple(x for x in res.manifest.layers if mt.layer_kind(x.media_type) is mt.LayerKind.WASM)
    return res.manifest_desc, layers, res.manifest.config.media_type


def select_wasm_layer(source: BlobSource, target: Descriptor) -> WasmLayer | None:
    """The layer that runs, or None when the image has no Wasm layer (see module doc)."""
    manifest, layers, config_type = wasm_layers(source, target)
    if not layers:
        return None
    return WasmLayer(manifest, config_type, layers[-1])
