"""``runwasm snapshotter --root DIR --address SOCKET``: serve the store until SIGTERM/SIGINT.

Contract: creates ``--root`` (0700) and the socket's directory; removes a stale socket file
(refusing a path that is not a socket); serves ``containerd.services.snapshots.v1.Snapshots``
(and ``containerd.services.diff.v1.Diff`` unless ``--no-diff``) on the unix socket; on
SIGTERM/SIGINT stops accepting calls, lets running ones finish (10 s grace), removes the socket
and returns 0. Layer mounts stay mounted across a daemon restart (containers use them);
``Remove``/``Cleanup`` release them.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from concurrent import futures
from pathlib import Path

log = logging.getLogger(__name__)
DEFAULT_ROOT = "/var/lib/runwasm-snapshotter"
DEFAULT_ADDRESS = "/run/runwasm-snapshotter/snapshotter.sock"


def _clear_socket(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"failed to listen on {str(path)!r}: it exists and is not a socket")
    path.unlink()


def serve(root: Path, address: Path, *, diff: bool = True, containerd_address: str = "/run/containerd/containerd.sock",
          ready: threading.Event | None = None,
          stop: threading.Event | None = None) -> int:
    import grpc

    from runwasm.oci.snapshotter.store import SnapshotStore
    from runwasm.shim.snapshotter.service import SnapshotsService

    store = SnapshotStore(root)
    address.parent.mkdir(parents=True, exist_ok=True)
    _clear_socket(address)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="snapshotter"),
                         options=[("grpc.max_receive_message_length", 16 << 20)])
    server.add_generic_rpc_handlers((SnapshotsService(store).handler(),))
    if diff:
        from runwasm.shim.snapshotter.diff import DiffService

        server.add_generic_rpc_handlers((DiffService(store, containerd_address).handler(),))
    server.add_insecure_port(f"unix:{address}")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    server.start()
    log.info("runwasm snapshotter serving %r on %r", str(store.root), str(address))
    if ready is not None:
        ready.set()
    stop.wait()
    server.stop(10).wait()
    address.unlink(missing_ok=True)
    return 0
