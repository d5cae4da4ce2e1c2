"""linux/network.py on the real kernel: a busybox container joins the namespace by path and
serves on the veth address; the host connects to it. Address checks need no root."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from runwasm.linux.errors import AlreadyExistsError, InvalidArgumentError
from runwasm.linux.network import NETNS_DIR, create_netns_with_veth
from tests.linux.harness import Bundle, Started, base_config


@pytest.mark.parametrize(("host", "ns", "plen"), [
    ("127.0.0.1", "127.0.0.2", 30),      # loopback: the kernel drops it on a veth
    ("8.8.8.1", "8.8.8.2", 30),          # routable
    ("169.254.9.1", "169.254.9.9", 30),  # not in one /30
    ("169.254.9.1", "169.254.9.1", 30),  # the same address twice
    ("169.254.9.0", "169.254.9.1", 30),  # network address
    ("169.254.9.1", "169.254.9.2", 31),  # no room for two hosts and a broadcast
    ("10.1.2.3", "nope", 24),
])
def test_bad_addresses_are_refused_before_anything_is_made(host: str, ns: str, plen: int) -> None:
    with pytest.raises(InvalidArgumentError, match="failed to create veth pair"):
        create_netns_with_veth("rw-bad", host, ns, plen)
    assert not (NETNS_DIR / "rw-bad").exists()


def _leftovers(name: str) -> list[str]:
    out = []
    if (NETNS_DIR / name).exists():
        out.append(str(NETNS_DIR / name))
    ifname = f"rwh-{name}"[:15]
    if Path(f"/sys/class/net/{ifname}").exists():
        out.append(ifname)
    return out


@pytest.mark.privileged
def test_container_joined_by_path_serves_the_host() -> None:
    name = f"rwnet{os.getpid() % 100000}"
    had_mount = os.path.ismount(NETNS_DIR)  # the /run/netns mount is ours to undo only if we made it
    h = create_netns_with_veth(name, "169.254.77.1", "169.254.77.2", 30)
    b: Bundle | None = None
    try:
        assert h.path == f"/run/netns/{name}"
        with pytest.raises(AlreadyExistsError):
            create_netns_with_veth(name, "169.254.78.1", "169.254.78.2", 30)
        cfg = base_config(["sh", "-c", "ip -o -4 addr show eth0; exec nc -l -p 8080 -e echo hi"])
        cfg["linux"]["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")] + \
            [{"type": "network", "path": h.path}]
        b = Bundle(cfg)
        s = Started(b.launch())
        assert s.msg["type"] == "ready", s.msg
        b.container.attach(s.pid)
        s.start()
        reply = b""
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((h.ns_ip, 8080), timeout=2) as conn:
                    while chunk := conn.recv(100):
                        reply += chunk
                break
            except ConnectionRefusedError:  # nc is not listening yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        assert reply == b"hi\n"
        r = s.wait()
        assert r.status == 0, r.stderr
        assert "eth0" in r.stdout, r.stdout
        assert "169.254.77.2/30" in r.stdout, r.stdout
    finally:
        if b is not None:
            b.cleanup()
        h.close()
        h.close()  # idempotent
    assert _leftovers(name) == []
    assert os.path.ismount(NETNS_DIR) == had_mount
