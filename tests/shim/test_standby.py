"""The standby hand-over (shim/standby.py) over real sockets, without a server."""

from __future__ import annotations

import socket
import tempfile
import threading
from pathlib import Path

import pytest

from runwasm.shim import standby


@pytest.fixture
def sock_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="rwsb-", dir="/tmp"))  # short: unix socket paths are limited


def test_path_is_per_containerd_and_namespace() -> None:
    a = standby.standby_path("/run/s", "/run/c.sock", "ns1")
    assert a.startswith("/run/s/runwasm-standby-")
    assert a != standby.standby_path("/run/s", "/run/c.sock", "ns2")
    assert a != standby.standby_path("/run/s", "/run/other.sock", "ns1")
    assert a == standby.standby_path("/run/s", "/run/c.sock", "ns1")


def test_offer_without_a_standby_is_declined(sock_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as lst:
        assert standby.offer(str(sock_dir / "none"), {"x": 1}, lst) is False


def test_only_one_standby_binds(sock_dir: Path) -> None:
    path = str(sock_dir / "sb")
    first = standby.bind(path)
    assert first is not None
    try:
        assert standby.bind(path) is None
    finally:
        first.close()
    # a stale socket file (its owner gone) is replaced
    second = standby.bind(path)
    assert second is not None
    second.close()


def test_offer_hands_over_the_listening_socket(sock_dir: Path) -> None:
    path = str(sock_dir / "sb")
    lst = standby.bind(path)
    assert lst is not None
    got: dict[str, object] = {}

    def standby_side() -> None:
        conn, _ = lst.accept()
        with conn:
            got["uid"] = standby.peer_uid(conn)
            doc, listener = standby.receive(conn)
            got["doc"] = doc
            got["listening"] = listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            listener.close()
            conn.sendall(standby.OK)

    t = threading.Thread(target=standby_side)
    t.start()
    group = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    group.bind(str(sock_dir / "group"))
    group.listen(1)
    try:
        assert standby.offer(path, {"id": "c2"}, group) is True
    finally:
        t.join(5)
        group.close()
        lst.close()
    assert got["doc"] == {"id": "c2"}
    assert got["listening"] == 1  # the standby holds the group's listening socket itself
    assert got["uid"] == __import__("os").geteuid()


def test_receive_refuses_an_offer_without_a_socket(sock_dir: Path) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        a.send(b'{"id": "x"}')
        with pytest.raises(ValueError, match="expected one listening socket, got 0 fds"):
            standby.receive(b)
