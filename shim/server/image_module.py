"""The module of a Wasm OCI image, read from containerd's content store (as runwasi does).

containerd mounts a rootfs built from an image's *filesystem* layers only. An image whose
module is a layer of its own (``application/wasm``, or the component layer type: runwasi's
flavour and the CNCF artifact, see ``runwasm.oci.wasm_image``) reaches the shim with an empty
rootfs, so the shim asks containerd, in the container's namespace, over its gRPC API:

    Containers.Get(id).image -> Images.Get(name).target -> Content.Read(index, manifest, config)
    -> the Wasm layer -> Content.Read(layer)

When it is asked (``TaskService``): only when ``process.args[0]`` does not resolve to a file in
the rootfs (or ``args`` is empty or ``[""]``, as runwasi's images set it), so containers whose
module is in the rootfs (the ``tar`` flavour, bundles, Linux images) never import grpc. When a
Wasm layer is found, *it* runs, whatever path ``args[0]`` names (its ``#export`` part is still
honoured, and the guest's argv is ``args`` unchanged).

The layer is written to ``<bundle>/wasm-layer/<hex>.wasm`` (verified digest, atomic rename) and
handed to the workload as ``module_file``; containerd removes the bundle with the container.
With ``precompile`` (the container's engine sandbox and the node's cache root), the compiled
artifact comes from, or goes to, containerd's content store (``shim/server/image_cache.py``) and is
written beside it as ``<key>.cwasm``, handed to the workload as ``precompiled_file``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runwasm.oci.image import Descriptor
from runwasm.oci.wasm_image import select_wasm_layer
from runwasm.shim.common.errors import ShimError
from runwasm.wasm.node_key import write_atomic

if TYPE_CHECKING:
    from runwasm.shim.server.image_cache import Compiled
    from runwasm.wasm.sandbox import Sandbox

log = logging.getLogger(__name__)

LAYER_DIR = "wasm-layer"


class ImageModuleError(ShimError):
    """The image could not be read; ``status`` is the underlying error's (not found, unavailable…)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ImageModule:
    """A Wasm layer of the container's image, materialised as a host file.

    image: the image reference; flavour: ``runwasi`` or ``artifact``; layer: its descriptor;
    path: the host file holding the module bytes; compiled: its compiled artifact, when the
    content-store cache gave one (else the workload compiles ``path``).
    """

    image: str
    flavour: str
    layer: Descriptor
    path: Path
    compiled: Compiled | None = None

    @property
    def where(self) -> str:
        return f"layer {self.layer.digest} ({self.layer.media_type}) of image {self.image!r}"


@dataclass(frozen=True, slots=True)
class Precompile:
    """What selects the compiled artifact: the container's sandbox (engine settings) and the
    node's cache root (its secret and lock files, ``runwasm.wasm.node_key``)."""

    sandbox: Sandbox
    cache_root: Path


def fetch_image_module(address: str, namespace: str, container_id: str, bundle: Path,
                       precompile: Precompile | None = None) -> ImageModule | None:
    """The Wasm layer of container ``container_id``'s image, or None when its image has none
    (or the container has no image). Blocking (gRPC): call it from a worker thread.

    Raises the client's errors (``NotFoundError``, ``UnavailableError``…) and oci errors
    (``NotFoundError`` when the image has no Wasm platform, ``DigestMismatchError``).
    """
    from runwasm.shim.server.containerd_api import ContainerdClient

    with ContainerdClient(address, namespace) as client:
        image = client.container_image(container_id)
        if not image:
            return None
        chosen = select_wasm_layer(client, client.image_target(image))
        if chosen is None:
            return None
        data = client.read_bytes(chosen.layer.digest)
        out_dir = bundle / LAYER_DIR
        out_dir.mkdir(mode=0o700, exist_ok=True)
        path = out_dir / f"{chosen.layer.digest.hex}.wasm"
        write_atomic(path, data)
        log.info("container %s: module from %s layer %s of image %r (%d bytes)", container_id, chosen.flavour,
                 chosen.layer.digest, image, len(data))
        compiled = None
        if precompile is not None:
            from runwasm.shim.server.image_cache import compiled_for_layer

            compiled = compiled_for_layer(client, chosen.layer.digest, path, precompile.sandbox,
                                          precompile.cache_root, out_dir)
    return ImageModule(image, chosen.flavour, chosen.layer, path, compiled)
