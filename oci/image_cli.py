"""The ``runwasm image`` command group.

``add_image_commands(subparsers)`` is called by ``runwasm.shim.cli``; each subcommand sets
``func`` (``Namespace -> int`` exit code). Handlers import their implementation lazily so that
``runwasm --help`` stays cheap. ``OciError`` is printed as ``runwasm: <message>`` with exit 1.
The store root is ``--root`` (per subcommand), else ``$RUNWASM_ROOT``, else ``/var/lib/runwasm``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runwasm.oci.errors import OciError

if TYPE_CHECKING:
    from runwasm.oci.image import Platform
    from runwasm.oci.images import ImageStore
    from runwasm.oci.store import ContentStore

DEFAULT_ROOT = "/var/lib/runwasm"
log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


def store_root(ns: argparse.Namespace) -> Path:
    """The store root chosen by ``--root``, ``$RUNWASM_ROOT`` or the default."""
    root = getattr(ns, "root", None) or os.environ.get("RUNWASM_ROOT") or DEFAULT_ROOT
    return Path(root)


def _guard(handler: Handler) -> Handler:
    def run(ns: argparse.Namespace) -> int:
        try:
            return handler(ns)
        except OciError as err:
            print(f"runwasm: {err}", file=sys.stderr)
            return 1
    return run


def _pack_wasm(ns: argparse.Namespace) -> int:
    from runwasm.oci.pack import pack_wasm

    packed = pack_wasm(Path(ns.module), Path(ns.output), ns.name, args=ns.arg or None, env=ns.env or None)
    print(json.dumps({"ref": packed.ref, "manifest": str(packed.manifest.digest),
                      "config": str(packed.config.digest), "layer": str(packed.layer.digest),
                      "entrypoint": packed.entrypoint}))
    return 0


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty() and total:
        width = 30
        filled = width * done // total
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done * 100 // total:3d}%")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _open_stores(ns: argparse.Namespace) -> tuple[ContentStore, ImageStore]:
    from runwasm.oci.images import ImageStore
    from runwasm.oci.store import ContentStore

    root = store_root(ns)
    return ContentStore(root), ImageStore(root)


def _platforms(ns: argparse.Namespace) -> tuple[Platform, ...]:
    from runwasm.oci.image import Platform
    from runwasm.oci.platforms import DEFAULT_PLATFORMS

    if getattr(ns, "platform", None):
        return tuple(Platform.parse(p) for p in ns.platform)
    return DEFAULT_PLATFORMS


def _import(ns: argparse.Namespace) -> int:
    from runwasm.oci.layout_import import import_layout

    store, images = _open_stores(ns)
    for record in import_layout(store, images, Path(ns.file), name=ns.name, platforms=_platforms(ns),
                                progress=_progress):
        print(f"{record.name}\t{record.target.digest}")
    return 0


def _ls(ns: argparse.Namespace) -> int:
    from runwasm.oci.resolve import resolve

    store, images = _open_stores(ns)
    if not ns.quiet:
        print("REF\tDIGEST\tPLATFORM\tLAYERS\tSIZE")
    for record in images.list():
        if ns.quiet:
            print(record.name)
            continue
        try:
            res = resolve(store, record.target, _platforms(ns))
            plat, nlayers = str(res.config.platform), str(len(res.manifest.layers))
            size = str(sum(x.size for x in res.manifest.layers) + res.manifest.config.size)
        except OciError as err:
            plat, nlayers, size = f"? ({err})", "?", "?"
        print(f"{record.name}\t{record.target.digest}\t{plat}\t{nlayers}\t{size}")
    return 0


def _rm(ns: argparse.Namespace) -> int:
    from runwasm.oci.gc import collect_garbage

    store, images = _open_stores(ns)
    with store.lock():
        for name in ns.names:
            print(images.delete(name).name)
        result = collect_garbage(store, images)
    log.info("gc removed %d blobs", len(result.removed_blobs))
    return 0


def _inspect(ns: argparse.Namespace) -> int:
    from runwasm.oci.resolve import resolve

    store, images = _open_stores(ns)
    record = images.get(ns.name)
    res = resolve(store, record.target, _platforms(ns))
    print(json.dumps({"name": record.name, "target": record.target.to_json(),
                      "manifestDigest": str(res.manifest_desc.digest),
                      "manifest": res.manifest.to_json(), "config": res.config.to_json()}, indent=2))
    return 0


def _gc(ns: argparse.Namespace) -> int:
    from runwasm.oci.gc import collect_garbage

    store, images = _open_stores(ns)
    with store.lock():
        result = collect_garbage(store, images)
    print(f"removed {len(result.removed_blobs)} blobs, {result.removed_ingest} ingest leftovers")
    return 0


def _add_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help=f"image store root (default $RUNWASM_ROOT or {DEFAULT_ROOT})")


def add_image_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``image`` and its subcommands to a ``runwasm`` argparse subparsers object."""
    image = subparsers.add_parser("image", help="manage OCI images and the EROFS layer store")
    sub = image.add_subparsers(dest="image_command", metavar="COMMAND", required=True)

    p = sub.add_parser("pack-wasm", help="pack a .wasm module into an OCI image-layout tarball")
    p.add_argument("module", help="the .wasm module")
    p.add_argument("-o", "--output", required=True, help="image tarball to write")
    p.add_argument("--name", required=True, help="image reference, e.g. docker.io/library/hello:latest")
    p.add_argument("--arg", action="append", help="argument appended to the entrypoint (repeatable)")
    p.add_argument("--env", action="append", help="KEY=VALUE environment entry (repeatable)")
    p.set_defaults(func=_guard(_pack_wasm))

    p = sub.add_parser("import", help="import an OCI image-layout tarball into the store")
    p.add_argument("file", help="layout tarball (docker save >= 25, skopeo oci-archive, pack-wasm)")
    p.add_argument("--name", help="image name to use instead of the index.json annotations")
    p.add_argument("--platform", action="append", help="os/arch[/variant] to accept (repeatable)")
    _add_root(p)
    p.set_defaults(func=_guard(_import))

    p = sub.add_parser("ls", help="list images")
    p.add_argument("-q", "--quiet", action="store_true", help="names only")
    p.add_argument("--platform", action="append", help="os/arch[/variant] to resolve (repeatable)")
    _add_root(p)
    p.set_defaults(func=_guard(_ls))

    p = sub.add_parser("rm", help="remove images and collect unreferenced blobs")
    p.add_argument("names", nargs="+", metavar="REF")
    _add_root(p)
    p.set_defaults(func=_guard(_rm))

    p = sub.add_parser("inspect", help="print an image's manifest and config as JSON")
    p.add_argument("name", metavar="REF")
    p.add_argument("--platform", action="append", help="os/arch[/variant] to resolve (repeatable)")
    _add_root(p)
    p.set_defaults(func=_guard(_inspect))

    p = sub.add_parser("gc", help="remove unreferenced blobs, layers and ingest leftovers")
    _add_root(p)
    p.set_defaults(func=_guard(_gc))

