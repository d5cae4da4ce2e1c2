"""Find a Wasm image's module bytes without mounting anything.

Order: a Wasm-typed layer (``application/wasm`` or the component layer type), the last one
wins; otherwise the entrypoint path (``config.Entrypoint[0]``, or ``path``) looked up in the
filesystem layers from the top down: in native EROFS layers with the Python reader, in tar
layers by streaming (a whiteout of the path in a higher layer hides it).
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence

from runwasm.oci import mediatypes as mt
from runwasm.oci.compression import decompressed
from runwasm.oci.errors import InvalidArgumentError, NotFoundError
from runwasm.oci.image import Descriptor, Platform
from runwasm.oci.platforms import WASM
from runwasm.oci.resolve import resolve
from runwasm.oci.store import ContentStore

MAX_MODULE = 1 << 30


def _norm(path: str) -> str:
    return "/".join(p for p in path.split("/") if p and p != ".")


def module_bytes(store: ContentStore, target: Descriptor, path: str | None = None,
                 platforms: Sequence[Platform] = (WASM,)) -> tuple[str, bytes]:
    """Return (where it was found, module bytes) for the image ``target``.

    Raises:
        NotFoundError: no Wasm layer and no file at the entrypoint path.
        InvalidArgumentError: no entrypoint to look for, or the file is not a Wasm binary.
    """
    res = resolve(store, target, platforms)
    wasm_layers = [x for x in res.manifest.layers if mt.layer_kind(x.media_type) is mt.LayerKind.WASM]
    if wasm_layers:
        layer = wasm_layers[-1]
        with store.open(layer.digest) as fh:
            return f"layer {layer.digest}", fh.read(MAX_MODULE)
    want = path or (res.config.config.entrypoint[0] if res.config.config.entrypoint else "")
    if not want:
        raise InvalidArgumentError(f"failed to find Wasm module in {str(target.digest)!r}: no entrypoint")
    rel = _norm(want)
    parent, _, base = rel.rpartition("/")
    whiteout = f"{parent}/.wh.{base}" if parent else f".wh.{base}"
    for layer in reversed(res.manifest.layers):
        kind = mt.layer_kind(layer.media_type)
        if kind.is_erofs:
            data = _from_erofs(store, layer, kind, rel)
        else:
            data = _from_tar(store, layer, kind, rel, whiteout)
        if data is False:
            break  # whited out
        if isinstance(data, bytes):
            if data[:4] != b"\0asm":
                raise InvalidArgumentError(f"failed to load {want!r} from {str(layer.digest)!r}: not a Wasm binary")
            return f"{want} in layer {layer.digest}", data
    raise NotFoundError(f"failed to find Wasm module {want!r} in image {str(target.digest)!r}")


def _from_tar(store: ContentStore, layer: Descriptor, kind: mt.LayerKind, rel: str,
              whiteout: str) -> bytes | bool | None:
    found: bytes | bool | None = None
    with store.open(layer.digest) as blob, tarfile.open(fileobj=decompressed(blob, kind), mode="r|") as tar:
        for m in tar:
            name = _norm(m.name)
            if name == whiteout:
                found = False
            elif name == rel and m.isreg():
                fh = tar.extractfile(m)
                found = fh.read(MAX_MODULE) if fh else None
    return found


def _from_erofs(store: ContentStore, layer: Descriptor, kind: mt.LayerKind, rel: str) -> bytes | bool | None:
    import stat

    from runwasm.oci.erofs.reader import ErofsImage

    if kind is mt.LayerKind.EROFS_ZSTD:
        return None  # would need decompressing to a file first; materialise with LayerStore instead
    with ErofsImage(store.path(layer.digest)) as im:
        try:
            ino = im.lookup("/" + rel)
        except NotFoundError:
            return None
        if stat.S_ISCHR(ino.mode) and ino.rdev == (0, 0):
            return False
        return im.read_data(ino) if stat.S_ISREG(ino.mode) else None
