"""``runwasm image pull-containerd|push-containerd`` and ``runwasm run --containerd``: the
argparse part (light; ``containerd_images`` and grpc are imported when a command runs).

Errors (``OciError``, ``ShimError``) are left to ``cli.main``, which prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_CONTAINERD = "/run/containerd/containerd.sock"


def add_containerd_arguments(p: argparse.ArgumentParser, default: str | None = DEFAULT_CONTAINERD) -> None:
    """``--containerd ADDRESS`` and ``--namespace NS``."""
    p.add_argument("--containerd", metavar="ADDRESS", default=default,
                   help=f"containerd's gRPC socket (default {DEFAULT_CONTAINERD})" if default else
                   "take the image from this containerd's content store (its gRPC socket) first")
    p.add_argument("--namespace", "-n", default=os.environ.get("CONTAINERD_NAMESPACE", "default"),
                   help="containerd namespace (default $CONTAINERD_NAMESPACE or 'default')")


def add_snapshotter_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--snapshotter-root", metavar="DIR",
                   help="the --root of the runwasm snapshotter containerd unpacked the image with: its EROFS"
                        " layers are used instead of converting the layers again")


def snapshotter_root(ns: argparse.Namespace) -> Path | None:
    return Path(ns.snapshotter_root) if ns.snapshotter_root else None


def _pull(ns: argparse.Namespace) -> int:
    from runwasm.oci.image import Platform
    from runwasm.oci.image_cli import store_root
    from runwasm.oci.platforms import DEFAULT_PLATFORMS
    from runwasm.shim.harness.containerd_images import pull_command

    platforms = tuple(Platform.parse(p) for p in ns.platform) if ns.platform else DEFAULT_PLATFORMS
    res = pull_command(ns.containerd, ns.namespace, store_root(ns), ns.ref, name=ns.name, platforms=platforms,
                       snapshotter_root=snapshotter_root(ns))
    print(f"{res.name} {res.target.digest}: {res.fetched} blobs copied from containerd, {res.present} already"
          f" stored, {len(res.reused_layers)} EROFS layers taken from the snapshotter")
    return 0


def _push(ns: argparse.Namespace) -> int:
    from runwasm.oci.image_cli import store_root
    from runwasm.shim.harness.containerd_images import push_command

    res = push_command(ns.containerd, ns.namespace, store_root(ns), ns.ref, name=ns.name)
    print(f"{res.name} {res.target.digest}: {res.written} blobs written to containerd")
    return 0


def add_image_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``pull-containerd`` and ``push-containerd`` to the ``runwasm image`` group."""
    from runwasm.oci.image_cli import add_root

    p = sub.add_parser("pull-containerd", help="copy an image from containerd's content store into the store")
    p.add_argument("ref", metavar="REF", help="the image's name in containerd")
    p.add_argument("--name", help="store it under this name instead")
    p.add_argument("--platform", action="append", help="os/arch[/variant] to resolve (repeatable)")
    add_containerd_arguments(p)
    add_snapshotter_root(p)
    add_root(p)
    p.set_defaults(func=_pull)

    p = sub.add_parser("push-containerd", help="write an image of the store into containerd (content and record)")
    p.add_argument("ref", metavar="REF", help="the image's name in runwasm's store")
    p.add_argument("--name", help="name it this in containerd instead")
    add_containerd_arguments(p)
    add_root(p)
    p.set_defaults(func=_push)
