"""ttrpc server memory under a client that pipelines requests and never reads (``make bench``).

A server process (the real ``runwasm.shim.ttrpc.server.Server``, one echo method with 100-byte
replies) on a Unix socket; this process connects, writes N request frames as fast as the server
takes them and never reads a reply. Printed: the server's RSS before, its peak (``VmHWM``) while
the client is stuck, and its RSS after the client hung up. No assertions on figures.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 50_000

SERVER = """
import asyncio, socket, sys
from runwasm.shim.ttrpc.server import Server

async def echo(payload, ctx):
    return b"r" * 100

async def main():
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sys.argv[1])
    listener.listen()
    print("ready", flush=True)
    await Server({("bench.v1.Echo", "Echo"): echo}).serve(listener)

asyncio.run(main())
"""


def _status_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _frames(count: int) -> bytes:
    from runwasm.shim.api.ttrpc import ttrpc_pb2
    from runwasm.shim.ttrpc.frame import MessageType, encode_frame

    body = ttrpc_pb2.Request(service="bench.v1.Echo", method="Echo", payload=b"x").SerializeToString()
    return b"".join(encode_frame(2 * i + 1, MessageType.REQUEST, body) for i in range(count))


def _settled(pid: int, key: str) -> float:
    """The figure once it stopped changing for 0.5 s (the server is done reading)."""
    last, still = -1.0, 0
    while still < 5:
        time.sleep(0.1)
        now = _status_mib(pid, key)
        still = still + 1 if now == last else 0
        last = now
    return last


def main() -> None:
    data = _frames(REQUESTS)
    with tempfile.TemporaryDirectory(prefix="runwasm-bench-ttrpc-") as tmp:
        path = os.path.join(tmp, "s.sock")
        server = subprocess.Popen([sys.executable, "-c", SERVER, path], cwd=ROOT, stdout=subprocess.PIPE)
        try:
            assert server.stdout is not None
            server.stdout.readline()
            before = _status_mib(server.pid, "VmRSS")
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(path)

            def send() -> None:
                try:
                    client.sendall(data)
                except OSError:
                    pass

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            peak = _settled(server.pid, "VmHWM")
            client.shutdown(socket.SHUT_RDWR)
            client.close()
            sender.join(10)
            after = _settled(server.pid, "VmRSS")
        finally:
            server.kill()
            server.wait()
    print(f"{REQUESTS} pipelined requests, replies never read: server RSS {before:.1f} MiB before, "
          f"peak {peak:.1f} MiB, {after:.1f} MiB after the client hung up")


if __name__ == "__main__":
    main()
