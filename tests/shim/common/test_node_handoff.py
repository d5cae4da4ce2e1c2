"""The handoff wire format and key (shim/common/node_handoff.py); the node side is in
tests/shim/server/test_node.py."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

import pytest

from runwasm.shim.common import node_handoff as nh


def test_offer_round_trip() -> None:
    doc = {"socket_path": "/run/x.sock", "id": "a"}
    assert nh.decode_offer(nh.encode_offer(doc), [7]) == doc


@pytest.mark.parametrize(("data", "fds", "needle"), [
    (b"XXXX\0{}", [3], "not a runwasm handoff offer"),
    (b"RWN1", [3], "not a runwasm handoff offer"),
    (b"RWN1\0{\"settings\": {\"socket_path\": \"/s\"}}", [], "exactly one listening socket, got 0"),
    (b"RWN1\0{\"settings\": {\"socket_path\": \"/s\"}}", [3, 4], "exactly one listening socket, got 2"),
    (b"RWN1\0not json", [3], "not JSON"),
    (b"RWN1\0[1, 2]", [3], "no settings with a socket_path"),
    (b"RWN1\0{\"settings\": {\"id\": \"a\"}}", [3], "no settings with a socket_path"),
])
def test_bad_offers_are_refused_with_a_reason(data: bytes, fds: list[int], needle: str) -> None:
    with pytest.raises(nh.HandoffError, match=needle):
        nh.decode_offer(data, fds)


def test_key_separates_daemons_and_ignores_per_start_variables() -> None:
    fields = {"grpc": "/a/c.sock", "ttrpc": "/a/c.sock.ttrpc"}
    base = nh.node_key("inst", "net=1:2", fields, {"RUNWASM_X": "1", "PATH": "/bin"})
    assert base == nh.node_key("inst", "net=1:2", fields, {"RUNWASM_X": "1", "PATH": "/usr/bin",
                                                           "RUNWASM_SHIM_SETTINGS": "{}", "NAMESPACE": "other"})
    assert base != nh.node_key("inst", "net=1:2", {**fields, "grpc": "/b/c.sock"}, {"RUNWASM_X": "1"})
    assert base != nh.node_key("inst", "net=1:2", fields, {"RUNWASM_X": "2"})
    assert base != nh.node_key("inst", "net=1:2", fields, {"RUNWASM_X": "1", "OTEL_SERVICE_NAME": "s"})
    assert base != nh.node_key("other", "net=1:2", fields, {"RUNWASM_X": "1"})
    assert base != nh.node_key("inst", "net=1:3", fields, {"RUNWASM_X": "1"})


def test_switch() -> None:
    assert nh.enabled({})
    assert not nh.enabled({nh.ENV_SWITCH: "off"})


def test_offer_without_a_node_server_returns_none(tmp_path: Path) -> None:
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(str(tmp_path / "g.sock"))
    lst.listen(1)
    with lst:
        assert nh.offer(str(tmp_path / "node-none.sock"), lst, {"socket_path": "g"}) is None
        # a dead node server's socket (nobody listens): refused connection, None
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        dead.bind(str(tmp_path / "node-dead.sock"))
        dead.close()
        assert nh.offer(str(tmp_path / "node-dead.sock"), lst, {"socket_path": "g"}) is None


def test_offer_reads_refusal_and_adoption(tmp_path: Path) -> None:
    """The caller's side against a scripted peer: anything but ``adopted <pid>`` is None."""
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(str(tmp_path / "g.sock"))
    lst.listen(1)
    node = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    node.bind(str(tmp_path / "n.sock"))
    node.listen(4)
    replies = [b"refused exiting", b"adopted notapid", b"adopted 4242"]
    results = []
    for reply in replies:
        pid = os.fork()
        if pid == 0:  # the scripted node side
            code = 1
            try:
                conn, _ = node.accept()
                msg, fds, _f, _a = socket.recv_fds(conn, nh.MAX_MESSAGE, 4)
                nh.decode_offer(msg, fds)
                conn.send(reply)
                code = 0
            finally:
                os._exit(code)
        results.append(nh.offer(str(tmp_path / "n.sock"), lst, {"socket_path": "g"}, timeout=10))
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert results == [None, None, 4242]
    node.close()
    lst.close()


def test_lock_is_exclusive_and_its_file_goes_with_its_holder(tmp_path: Path) -> None:
    path = str(tmp_path / "node-x.lock")
    fd = nh.take_lock(path)
    assert fd is not None
    assert nh.take_lock(path) is None  # held
    nh.drop_lock(path, fd)
    assert not os.path.exists(path)
    again = nh.take_lock(path)
    assert again is not None
    os.close(again)  # a holder that dies without drop_lock leaves the file: the next one reuses it
    reused = nh.take_lock(path)
    assert reused is not None
    nh.drop_lock(path, reused)


def test_lock_taken_on_a_removed_file_is_taken_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder unlinks its file and lets go while a newcomer has the old file open: the
    newcomer's flock then succeeds on a file nobody else will ever see, and two processes would
    each believe they hold the lock; take_lock notices and takes it on the file at the path."""
    path = str(tmp_path / "node-x.lock")
    holder = nh.take_lock(path)
    assert holder is not None
    real_flock = fcntl.flock
    raced = []

    def flock(fd: int, op: int) -> None:
        if not raced:  # between the newcomer's open and its flock, the holder lets go
            raced.append(os.fstat(fd).st_ino)
            nh.drop_lock(path, holder)
        real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    fd = nh.take_lock(path)
    assert fd is not None
    assert raced  # the race did happen
    assert os.fstat(fd).st_ino == os.stat(path).st_ino  # held on the file at the path
    monkeypatch.setattr(fcntl, "flock", real_flock)
    assert nh.take_lock(path) is None  # and it excludes the next newcomer
    nh.drop_lock(path, fd)
