"""The runwasm snapshotter's committed layers, found by chain ID for the harness's layer store.

containerd unpacks an image layer by layer into snapshots named by the layer's *chain ID*
(``chain[0] = diff_id[0]``, ``chain[i] = sha256(chain[i-1] + " " + diff_id[i])``, the OCI
image spec's ChainID). Its metadata layer hands a proxy snapshotter the key
``<namespace>/<sequence>/<chain ID>``, and the unpacker labels the snapshot
``containerd.io/snapshot.ref = <chain ID>``. A committed snapshot of ``runwasm snapshotter``
holds exactly that layer's diff as ``s/<id>/layer.erofs`` (overlay whiteouts), which is what
the harness's ``LayerStore`` keeps as ``layers/<diff id>/layer.erofs``: so an image containerd
unpacked through the snapshotter needs no second conversion.

``committed_layers(root, namespace, chain_ids)`` reads ``metadata.json`` (written atomically
by the daemon, so a concurrent reader sees a whole table) and never changes the store.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from runwasm.oci.digest import Digest
from runwasm.oci.snapshotter.meta import Kind, SnapshotTable
from runwasm.oci.snapshotter.store import LAYER, META

SNAPSHOT_REF_LABEL = "containerd.io/snapshot.ref"


def chain_ids(diff_ids: Sequence[Digest]) -> list[Digest]:
    """The chain ID of each layer, bottom first."""
    out: list[Digest] = []
    for diff in diff_ids:
        if not out:
            out.append(diff)
        else:
            text = f"{out[-1]} {diff}".encode()
            out.append(Digest.parse("sha256:" + hashlib.sha256(text).hexdigest()))
    return out


def committed_layers(root: Path, namespace: str, chains: Sequence[Digest]) -> dict[Digest, Path]:
    """For each chain ID in ``chains`` that the snapshotter at ``root`` holds as a committed
    snapshot of containerd namespace ``namespace``: the path of its ``layer.erofs``.

    A snapshot counts when its key is ``<namespace>/<n>/<chain ID>`` (containerd's metadata
    naming) or, in that namespace, its ``containerd.io/snapshot.ref`` label names the chain ID.

    Raises:
        NotFoundError: ``root`` has no ``metadata.json`` (not a snapshotter root).
        InvalidArgumentError: the table cannot be parsed.
    """
    from runwasm.oci.errors import NotFoundError

    meta = root / META
    try:
        data = meta.read_bytes()
    except FileNotFoundError as err:
        raise NotFoundError(f"failed to read the runwasm snapshotter's store {str(root)!r}: no {META}"
                            " (is it the snapshotter's --root?)") from err
    table = SnapshotTable.from_json(data, str(meta))
    wanted = {str(c) for c in chains}
    key_re = re.compile(rf"^{re.escape(namespace)}/[0-9]+/(sha256:[0-9a-f]{{64}})$")
    found: dict[Digest, Path] = {}
    for snap in table.by_key.values():
        if snap.kind is not Kind.COMMITTED:
            continue
        m = key_re.match(snap.key)
        label = snap.labels.get(SNAPSHOT_REF_LABEL, "")
        chain = m.group(1) if m else (label if snap.key.startswith(f"{namespace}/") else "")
        if chain in wanted:
            path = root / "s" / str(snap.id) / LAYER
            if path.is_file():
                found[Digest.parse(chain)] = path
    return found
