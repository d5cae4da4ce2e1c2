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

from runwasm.oci.errors import OciError

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

