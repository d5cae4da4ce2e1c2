"""The ``-info`` flag: print a ``containerd.types.RuntimeInfo`` protobuf (shim-protocol.md §8).

Fields: 1 name, 2 version, 3 the options ``Any`` given on stdin (echoed), 4 ``features``: an
``Any`` holding the runtime-spec features document as JSON (``shim/entry/features.py``).

Field 5, ``annotations``: ``containerd.io/runtime-allow-mounts`` = ``erofs,format/*,mkdir/*``.
containerd 2.2+ (its mount manager) then leaves EROFS layers and the ``format/``/``mkdir/``
transformers of a rootfs to the shim, which mounts them in a private mount namespace
(``shim/common/rootfs_plan.py``, ``shim/server/private_rootfs.py``). containerd 1.6 never asks
for ``-info`` at task creation and ignores the field.
"""

from __future__ import annotations

from runwasm.shim.common import wire
from runwasm.shim.common.naming import RUNTIME_NAME
from runwasm.shim.common.rootfs_plan import ALLOW_MOUNTS_ANNOTATION, HANDLED_TYPES
from runwasm.shim.common.version import REVISION, VERSION
from runwasm.shim.entry import features


def run(stdin: bytes) -> bytes:
    version = wire.enc_str(1, VERSION) + wire.enc_str(2, REVISION)
    out = wire.enc_str(1, RUNTIME_NAME) + wire.enc_bytes(2, version, keep_empty=True)
    if stdin:
        try:
            type_url, value = wire.dec_any(stdin)
        except wire.WireError:
            type_url = ""
        if type_url:
            out += wire.enc_any(3, type_url, value)
    out += wire.enc_any(4, features.TYPE_URL, features.encode())
    entry = wire.enc_str(1, ALLOW_MOUNTS_ANNOTATION) + wire.enc_str(2, ",".join(HANDLED_TYPES))
    out += wire.enc_bytes(5, entry)
    return out
