"""The ``runwasm image`` command group.

``add_image_commands(subparsers)`` is called by ``runwasm.shim.harness.cli``; each subcommand sets
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

from runwasm.oci import steps
from runwasm.oci.errors import InvalidArgumentError, OciError

if TYPE_CHECKING:
    from runwasm.oci.image import Platform
    from runwasm.oci.images import ImageRecord, ImageStore
    from runwasm.oci.store import ContentStore

DEFAULT_ROOT = "/var/lib/runwasm"
log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


def store_root(ns: argparse.Namespace) -> Path:
    """The store root chosen by ``--root``, ``$RUNWASM_ROOT`` or the default."""
    root = getattr(ns, "root", None) or os.environ.get("RUNWASM_ROOT") or DEFAULT_ROOT
    return Path(root)


def user_message(err: BaseException) -> str:
    """The one line a user sees for ``err``: its message, plus for a missing image how to fill
    the store that was searched (or pick another)."""
    from runwasm.oci.images import ImageNotFoundError

    text = str(err) or type(err).__name__
    if isinstance(err, ImageNotFoundError):
        text += ("; import it with 'runwasm image import FILE', list the store with 'runwasm image ls',"
                 " or choose another store with --root or $RUNWASM_ROOT")
    return " ".join(text.split("\n"))


def _guard(handler: Handler) -> Handler:
    def run(ns: argparse.Namespace) -> int:
        try:
            return handler(ns)
        except OciError as err:
            print(f"runwasm: {user_message(err)}", file=sys.stderr)
            return 1
    return run


def _pack_wasm(ns: argparse.Namespace) -> int:
    from runwasm.oci.pack import pack_wasm

    try:
        packed = pack_wasm(Path(ns.module), Path(ns.output), ns.name, args=ns.arg or None, env=ns.env or None,
                           fmt=ns.format)
    except OSError as err:
        raise InvalidArgumentError(f"failed to write image {ns.output!r}: {err.strerror or err}"
                                   f" ({err.filename!r})") from err
    print(json.dumps({"ref": packed.ref, "format": ns.format, "manifest": str(packed.manifest.digest),
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


def open_stores(root: Path) -> tuple[ContentStore, ImageStore]:
    """The content and image stores at ``root``; an unusable root is one clear error.

    Raises:
        InvalidArgumentError: ``root`` cannot be created or opened (names it and the cause).
    """
    from runwasm.oci.images import ImageStore
    from runwasm.oci.store import ContentStore

    try:
        return ContentStore(root), ImageStore(root)
    except OSError as err:
        raise InvalidArgumentError(f"failed to open the image store {str(root)!r}: {err.strerror or err}"
                                   " (choose a writable directory with --root or $RUNWASM_ROOT)") from err


def _open_stores(ns: argparse.Namespace) -> tuple[ContentStore, ImageStore]:
    return open_stores(store_root(ns))


def _platforms(ns: argparse.Namespace) -> tuple[Platform, ...]:
    from runwasm.oci.image import Platform
    from runwasm.oci.platforms import DEFAULT_PLATFORMS

    if getattr(ns, "platform", None):
        return tuple(Platform.parse(p) for p in ns.platform)
    return DEFAULT_PLATFORMS


def _import(ns: argparse.Namespace) -> int:
    from runwasm.oci.layout_import import import_layout

    store, images = _open_stores(ns)
    verify = _import_verifier(ns, store, images)
    with steps.step("image.import", **{"runwasm.image.archive": str(ns.file)}):
        records = list(import_layout(store, images, Path(ns.file), name=ns.name, platforms=_platforms(ns),
                                     progress=_progress, verify=verify))
    for record in records:
        print(f"{record.name}\t{record.target.digest}")
    return 0


def _import_verifier(ns: argparse.Namespace, store: ContentStore,
                     images: ImageStore) -> Callable[[list[ImageRecord]], None] | None:
    """The ``verify`` hook of an import: ``--verify POLICY`` or the store's default policy."""
    from runwasm.oci.verify.local import policy_for, verify_records

    policy = policy_for(store_root(ns), getattr(ns, "verify", None))
    if policy is None:
        return None
    checked = policy

    def hook(records: list[ImageRecord]) -> None:
        for j in verify_records(checked, store, images, records):
            print(f"runwasm: {j.reason}", file=sys.stderr)
    return hook


def _ls(ns: argparse.Namespace) -> int:
    from runwasm.oci.resolve import resolve

    store, images = _open_stores(ns)
    if not ns.quiet:
        print("REF\tDIGEST\tPLATFORM\tLAYERS\tSIZE")
    for record in images.list():
        if ns.quiet:
            print(record.name)
            continue
        if _is_signature_record(record.name):  # cosign signature image (runwasm image sign / import)
            print(f"{record.name}\t{record.target.digest}\tsignature\t-\t{record.target.size}")
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
            removed = images.delete(name)
            print(removed.name)
            _remove_orphan_signatures(images, removed)
        result = collect_garbage(store, images)
    log.info("gc removed %d blobs", len(result.removed_blobs))
    return 0


def _is_signature_record(name: str) -> bool:
    from runwasm.oci.verify.local import is_signature_record

    return is_signature_record(name)


def _remove_orphan_signatures(images: ImageStore, removed: ImageRecord) -> None:
    """Remove the ``<repo>:sha256-<hex>.sig`` record of a removed image once no record of the
    store targets that digest any more (it would only keep dead blobs alive)."""
    from runwasm.oci.errors import NotFoundError
    from runwasm.oci.reference import Reference
    from runwasm.oci.verify.cosign import sig_tag

    if _is_signature_record(removed.name) or any(r.target.digest == removed.target.digest for r in images.list()):
        return
    try:
        print(images.delete(f"{Reference.parse(removed.name).name}:{sig_tag(removed.target.digest)}").name)
    except NotFoundError:
        pass


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
    print(f"removed {len(result.removed_blobs)} blobs, {len(result.removed_layers)} layers,"
          f" {result.removed_ingest} ingest leftovers")
    return 0


def _convert(ns: argparse.Namespace) -> int:
    from runwasm.oci.convert import convert_to_erofs

    if not ns.erofs:
        print("runwasm: image convert: only --erofs is supported", file=sys.stderr)
        return 2
    store, images = _open_stores(ns)
    with steps.step("image.convert", **{"runwasm.image.source": ns.src, "runwasm.image.target": ns.dst}):
        record = convert_to_erofs(store, images, ns.src, ns.dst, zstd=ns.zstd, platforms=_platforms(ns))
    print(f"{record.name}\t{record.target.digest}")
    return 0


def _mount_id(target: Path) -> str:
    import hashlib

    return "mnt-" + hashlib.sha256(os.fsencode(os.path.realpath(target))).hexdigest()[:16]


def _mount(ns: argparse.Namespace) -> int:
    from runwasm.oci.mounts.rootfs import prepare_rootfs

    store, _ = _open_stores(ns)
    target = Path(ns.dir)
    with steps.step("image.mount", **{"runwasm.image.name": ns.name}) as attrs:
        handle = prepare_rootfs(store, ns.name, target, _mount_id(target), mode=ns.mode, readonly=not ns.rw,
                                platforms=_platforms(ns))
        attrs["runwasm.rootfs.method"] = handle.method
    print(f"{handle.rootfs}\t{handle.method}")
    return 0


def _umount(ns: argparse.Namespace) -> int:
    from runwasm.oci.errors import NotFoundError
    from runwasm.oci.mounts.rootfs import cleanup_recorded, default_state_dir

    cleaned = cleanup_recorded(default_state_dir(store_root(ns)), _mount_id(Path(ns.dir)))
    if not cleaned:
        raise NotFoundError(f"failed to unmount {ns.dir!r}: not mounted by 'runwasm image mount'")
    return 0


def _sign(ns: argparse.Namespace) -> int:
    from runwasm.oci.verify.cli import sign

    return sign(ns, store_root(ns))


def _verify_cmd(ns: argparse.Namespace) -> int:
    from runwasm.oci.verify.cli import verify

    return verify(ns, store_root(ns))


def _keygen(ns: argparse.Namespace) -> int:
    from runwasm.oci.verify.cli import keygen

    return keygen(ns)


def add_root(p: argparse.ArgumentParser) -> None:
    """``--root`` of a subcommand (the image store root)."""
    _add_root(p)


def _add_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help=f"image store root (default $RUNWASM_ROOT or {DEFAULT_ROOT})")


def add_image_commands(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """Add ``image`` and its subcommands to a ``runwasm`` argparse subparsers object; returns
    the ``image`` group's subparsers (the harness adds its containerd commands there)."""
    image: argparse.ArgumentParser = subparsers.add_parser("image", help="manage OCI images and the EROFS layer store")
    sub: argparse._SubParsersAction = image.add_subparsers(  # type: ignore[type-arg]
        dest="image_command", metavar="COMMAND", required=True)

    p = sub.add_parser("pack-wasm", help="pack a .wasm module into an OCI image-layout tarball")
    p.add_argument("module", help="the .wasm module")
    p.add_argument("-o", "--output", required=True, help="image tarball to write")
    p.add_argument("--name", required=True, help="image reference, e.g. docker.io/library/hello:latest")
    p.add_argument("--arg", action="append", help="argument appended to the entrypoint (repeatable)")
    p.add_argument("--env", action="append", help="KEY=VALUE environment entry (repeatable)")
    p.add_argument("--format", choices=("tar", "runwasi", "artifact"), default="tar",
                   help="tar: module as a file in a tar layer (default; containerd 1.6 and 2.3); runwasi: "
                        "raw module/component layer, OCI config (ctr run on containerd 2.3); artifact: CNCF "
                        "Wasm OCI artifact (application/vnd.wasm.config.v0+json; CRI, runwasm run)")
    p.set_defaults(func=_guard(_pack_wasm))

    p = sub.add_parser("import", help="import an OCI image-layout tarball into the store")
    p.add_argument("file", help="layout tarball (docker save >= 25, skopeo oci-archive, pack-wasm)")
    p.add_argument("--name", help="image name to use instead of the index.json annotations")
    p.add_argument("--platform", action="append", help="os/arch[/variant] to accept (repeatable)")
    p.add_argument("--verify", metavar="POLICY", help="refuse images the signature policy does not accept"
                   " (default: <root>/verify-policy.toml when present)")
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

    p = sub.add_parser("convert", help="convert an image's tar layers to native EROFS layers")
    p.add_argument("--erofs", action="store_true", help="produce application/vnd.erofs.layer.v1 layers")
    p.add_argument("--zstd", action="store_true", help="zstd-wrap the EROFS layers (…v1+zstd)")
    p.add_argument("--platform", action="append", help="os/arch[/variant] to convert (repeatable)")
    p.add_argument("src", metavar="SRC_REF")
    p.add_argument("dst", metavar="DST_REF")
    _add_root(p)
    p.set_defaults(func=_guard(_convert))

    p = sub.add_parser("mount", help="mount an image's rootfs at DIR (read-only unless --rw)")
    p.add_argument("name", metavar="REF")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--rw", action="store_true", help="add a writable upper layer (discarded on umount)")
    p.add_argument("--mode", default="auto", choices=["auto", "erofs", "dirs", "flat"],
                   help="force a rung of the fallback ladder")
    p.add_argument("--platform", action="append", help="os/arch[/variant] to resolve (repeatable)")
    _add_root(p)
    p.set_defaults(func=_guard(_mount))

    p = sub.add_parser("umount", help="unmount a DIR mounted by 'image mount' and remove its scratch")
    p.add_argument("dir", metavar="DIR")
    _add_root(p)
    p.set_defaults(func=_guard(_umount))

    from runwasm.oci.verify.cli import add_arguments

    add_arguments(sub, _add_root, _guard(_sign), _guard(_verify_cmd), _guard(_keygen))

    p = sub.add_parser("gc", help="remove unreferenced blobs, layers and ingest leftovers")
    _add_root(p)
    p.set_defaults(func=_guard(_gc))
    return sub

