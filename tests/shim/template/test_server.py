"""``fork_server`` asks the template to fork the server (``serve_fork_request``): the server
gets the child's argv, environment, umask and listening socket, none of the template's fds, and
is the template's fork, not the child's. ``_become_server`` is replaced by a recorder (it runs
in the forked grandchild, so the replacement is inherited by the fork)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from runwasm.shim.common.node_handoff import ENV_NODE_CLAIMED
from runwasm.shim.entry.start import ENV_LISTEN_FD
from runwasm.shim.template import server
from runwasm.shim.template.key import ENV_FORKED_BY


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the fake server writes what it got: its pid, argv, env, umask, the fds it is to
    close (``_become_server`` closes them first thing), and the inode of the socket its
    environment names."""
    out = tmp_path / "server.json"

    def fake(argv: Sequence[str], env: dict[str, str], close: Sequence[int], umask: int | None) -> None:
        try:
            if umask is not None:
                os.umask(umask)
            mask = os.umask(0)
            fd = int(env[ENV_LISTEN_FD])
            claimed = [os.fstat(int(n)).st_ino for n in env.get(ENV_NODE_CLAIMED, "").split(",") if n]
            out.write_text(json.dumps({"pid": os.getpid(), "argv": list(argv), "env": env, "umask": mask,
                                       "close": list(close), "sock_ino": os.fstat(fd).st_ino,
                                       "claimed_inos": claimed}))
        finally:
            os._exit(0)

    monkeypatch.setattr(server, "_become_server", fake)
    return out


@pytest.fixture(autouse=True)
def _reap_intermediates() -> Iterator[None]:
    """The template does not wait for the intermediate it forks (the kernel reaps its
    children there): reap ours once they are zombies."""
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        zombies = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _zombie_child(int(p.name))]
        for pid in zombies:
            os.waitpid(pid, 0)
        if not zombies:
            return
        time.sleep(0.02)


def _zombie_child(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] == "Z" and int(fields[1]) == os.getpid()


def _read(out: Path) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            return dict(json.loads(out.read_text()))
        except (OSError, ValueError):
            time.sleep(0.02)
    raise AssertionError("the fake server wrote nothing")


@pytest.fixture
def channel(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the template's end, the child's end), the child's set as ``server.template_channel``."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    monkeypatch.setattr(server, "template_channel", theirs)
    yield mine, theirs
    mine.close()
    theirs.close()


def test_the_template_forks_the_server_with_the_childs_settings(recorder: Path,
                                                                channel: tuple[socket.socket, socket.socket]) -> None:
    mine, _theirs = channel
    mine_fd = mine.fileno()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    decoy = os.open(os.devnull, os.O_RDONLY)  # stands for the template's own fds (listener, lock)
    got: dict[str, object] = {}

    def template() -> None:
        got["served"] = server.serve_fork_request(mine, [decoy])
        got["eof"] = server.serve_fork_request(mine, [decoy])

    t = threading.Thread(target=template)
    t.start()
    old = os.umask(0o027)
    try:
        env = {"TTRPC_ADDRESS": "/run/x.sock", ENV_LISTEN_FD: str(listener.fileno())}
        pid = server.fork_server(["shim", "-namespace", "ns", "-id", "c1", "_runwasm_serve"], env, listener)
    finally:
        os.umask(old)
    seen = _read(recorder)
    server.template_channel.close()  # type: ignore[union-attr]  # the child is done: EOF
    t.join(10)
    os.close(decoy)
    listener_ino = os.fstat(listener.fileno()).st_ino
    listener.close()
    assert got == {"served": True, "eof": False}
    assert seen["pid"] == pid
    assert seen["argv"] == ["shim", "-namespace", "ns", "-id", "c1", "_runwasm_serve"]
    env_seen = seen["env"]
    assert isinstance(env_seen, dict)
    assert env_seen["TTRPC_ADDRESS"] == "/run/x.sock"
    assert env_seen[ENV_FORKED_BY] == str(os.getppid())  # a template child's parent is the template
    assert seen["sock_ino"] == listener_ino, "the server's listening fd is not the child's socket"
    assert seen["umask"] == 0o027
    assert seen["close"] == [decoy, mine_fd], "the server keeps a template fd"


def test_a_request_without_the_socket_is_refused(recorder: Path, channel: tuple[socket.socket, socket.socket]) -> None:
    mine, theirs = channel
    theirs.send(json.dumps({"argv": ["shim"], "env": {}, "umask": 0o22}).encode())
    assert server.serve_fork_request(mine, [])
    assert theirs.recv(256).decode() == "error no listening socket named"
    r, w = os.pipe()
    socket.send_fds(theirs, [json.dumps({"argv": ["shim"], "env": {}, "umask": 0o22,
                                         "fd_vars": {ENV_LISTEN_FD: [0], ENV_NODE_CLAIMED: [1, 2]}}).encode()], [r])
    assert server.serve_fork_request(mine, [])
    reply = theirs.recv(256).decode()
    assert reply.startswith("error the request names fds"), reply
    assert reply.endswith("but 1 arrived"), reply
    socket.send_fds(theirs, [json.dumps({"argv": ["shim"], "env": {}, "umask": 0o22, "witness": 0,
                                         "fd_vars": {ENV_LISTEN_FD: [0]}}).encode()], [r, w])
    assert server.serve_fork_request(mine, [])
    assert theirs.recv(256).decode() == "error the request's witness 0 is not one of its other fds"
    os.close(r)
    os.close(w)
    assert not recorder.exists()


class _Forks:
    """Counts the ``_fork_detached`` calls made by the child (the test's main thread), not by
    the template standing in a thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.by_child = 0
        real = server._fork_detached

        def counted(*args: object, **kwargs: object) -> int:
            if threading.current_thread() is threading.main_thread():
                self.by_child += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(server, "_fork_detached", counted)


def _dying_template(mine: socket.socket, fork: bool) -> threading.Thread:
    """A template that takes the request and dies without a reply: after forking the server
    (``fork``) or before."""
    def template() -> None:
        msg, fds, _flags, _addr = socket.recv_fds(mine, 1 << 20, 8)
        req = json.loads(msg)
        try:
            if fork:
                env = {**req["env"], ENV_LISTEN_FD: str(fds[0])}
                server._fork_detached(req["argv"], env, [], None, reap=True, witness=fds[req["witness"]])
        finally:
            for fd in fds:
                os.close(fd)
            mine.close()  # dead: the child's channel reads end of file

    t = threading.Thread(target=template)
    t.start()
    return t


def test_a_template_that_dies_after_forking_the_server_leaves_it_the_only_one(
        recorder: Path, channel: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL of the template between its fork of the server and its reply: the child learns
    the server's pid from the witness and forks no second server on the same socket."""
    forks = _Forks(monkeypatch)
    mine, _theirs = channel
    t = _dying_template(mine, fork=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = server.fork_server(["shim", "_runwasm_serve"], {ENV_LISTEN_FD: str(listener.fileno())}, listener)
    t.join(10)
    assert _read(recorder)["pid"] == pid
    assert forks.by_child == 0
    listener.close()


@pytest.mark.parametrize("how", ["dies", "answers an error"])
def test_a_template_that_forks_no_server_leaves_it_to_the_child(
        how: str, recorder: Path, channel: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    """The template takes the request but forks nothing (it dies first, or its fork fails): the
    child forks the server itself, as it does without a template; containerd never notices."""
    forks = _Forks(monkeypatch)
    mine, _theirs = channel
    if how == "dies":
        t = _dying_template(mine, fork=False)
    else:
        def template() -> None:
            _msg, fds, _flags, _addr = socket.recv_fds(mine, 1 << 20, 8)
            for fd in fds:
                os.close(fd)
            mine.send(b"error no fork for you")

        t = threading.Thread(target=template)
        t.start()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = server.fork_server(["shim", "_runwasm_serve"], {ENV_LISTEN_FD: str(listener.fileno())}, listener)
    t.join(10)
    assert forks.by_child == 1
    seen = _read(recorder)
    assert seen["pid"] == pid
    assert seen["sock_ino"] == os.fstat(listener.fileno()).st_ino
    listener.close()


def test_a_stalled_template_fails_the_fork_rather_than_risk_two_servers(
        recorder: Path, channel: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    """No answer in time and the witness still held: the template may yet fork the server, so
    the child must not fork another."""
    monkeypatch.setattr(server, "FORK_REPLY_TIMEOUT", 0.3)
    forks = _Forks(monkeypatch)
    mine, _theirs = channel
    held: list[int] = []
    t = threading.Thread(target=lambda: held.extend(socket.recv_fds(mine, 1 << 20, 8)[1]))
    t.start()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(OSError, match=r"could not fork the shim server \(no answer\) and may still"):
        server.fork_server(["shim", "_runwasm_serve"], {ENV_LISTEN_FD: str(listener.fileno())}, listener)
    t.join(10)
    for fd in held:
        os.close(fd)
    assert forks.by_child == 0
    assert not recorder.exists()
    listener.close()


def test_the_claimed_node_socket_and_lock_reach_the_server(recorder: Path, tmp_path: Path,
                                                           channel: tuple[socket.socket, socket.socket]) -> None:
    """``start`` claimed the node socket and its lock for the server (shim/common/node_handoff.py):
    they go over with the listening socket, and the server's environment names them where
    they arrived (the same open files: a flock stays with them)."""
    import fcntl

    mine, theirs = channel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    node = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    lock = os.open(tmp_path / "node.lock", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    got: dict[str, object] = {}
    t = threading.Thread(target=lambda: got.update(served=server.serve_fork_request(mine, [])))
    t.start()
    env = {ENV_LISTEN_FD: str(listener.fileno()), ENV_NODE_CLAIMED: f"{node.fileno()},{lock}"}
    server.fork_server(["shim", "_runwasm_serve"], env, listener)
    t.join(10)
    seen = _read(recorder)
    assert got == {"served": True}
    assert seen["claimed_inos"] == [os.fstat(node.fileno()).st_ino, os.fstat(lock).st_ino]
    listener.close()
    node.close()
    os.close(lock)
    theirs.close()


def test_without_a_template_to_ask_the_child_forks_the_server_itself(
        recorder: Path, channel: tuple[socket.socket, socket.socket]) -> None:
    mine, _theirs = channel
    mine.close()  # the template is gone before the request
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = server.fork_server(["shim", "_runwasm_serve"], {ENV_LISTEN_FD: str(listener.fileno())}, listener)
    seen = _read(recorder)
    assert seen["pid"] == pid
    assert seen["sock_ino"] == os.fstat(listener.fileno()).st_ino
    listener.close()


def test_the_server_runs_when_nobody_reads_its_witness(recorder: Path) -> None:
    """The child stops reading the witness once the template answered with the pid, which can
    be before the server writes to it: the write's EPIPE must not stop the server."""
    r, w = os.pipe()
    os.close(r)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = server._fork_detached(["shim", "_runwasm_serve"], {ENV_LISTEN_FD: str(listener.fileno())}, [], None,
                                reap=True, witness=w)
    os.close(w)
    assert _read(recorder)["pid"] == pid
    listener.close()
