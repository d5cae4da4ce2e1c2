"""The ``-info`` flag: print a ``containerd.types.RuntimeInfo`` protobuf (shim-protocol.md §8).

Fields: 1 name, 2 version, 3 the options ``Any`` given on stdin (echoed), 4 ``features``: an
``Any`` holding the runtime-spec features document as JSON (``shim/entry/features.py``).

No ``containerd.io/runtime-allow-mounts`` annotation: runwasm mounts only what containerd hands
it in CreateTaskRequest.rootfs, so containerd keeps activating special mount types itself.
"""

from __future__ import annotations

from runwasm.shim.common import wire
from runwasm.shim.common.naming import RUNTIME_NAME
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
    return out
