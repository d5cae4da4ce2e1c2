"""The node server's adoption side (shim/server/node.py) with real sockets, a real ttrpc client
and real log FIFOs: offers adopted and served, bad offers and other users refused, a group's
Shutdown leaving the others serving, the node refusing once its last group is gone."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import shutil
import signal
import socket
import stat
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
from runwasm.shim.common import node_handoff as nh
from runwasm.shim.entry.bootstrap import Settings
from runwasm.shim.entry.start import settings_doc
from runwasm.shim.server import group_logs, node
from runwasm.shim.server.reaper import Reaper
from runwasm.shim.spawn.zygote import Zygote
from runwasm.shim.ttrpc.client import Client

NS = "nodetest"
TASK = "containerd.task.v3.Task"


def _settings(tmp: Path, cid: str) -> Settings:
    bundle = tmp / cid
    bundle.mkdir()
    os.mkfifo(bundle / "log")
    return Settings(mode="legacy", namespace=NS, id=cid, bundle=str(bundle), ttrpc_address="", grpc_address="",
                    containerd_binary="", containerd_version="", debug=False, socket_dir=str(tmp), options=None)


def _listen(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(8)
    return s


async def _call(path: Path, method: str, req: object, resp_cls: type) -> object:
    client = await Client.connect(str(path))
    try:
        data = await client.call(TASK, method, req.SerializeToString(), timeout=10,  # type: ignore[attr-defined]
                                 metadata={"containerd-namespace-ttrpc": NS})
    finally:
        await client.close()
    out = resp_cls()
    out.ParseFromString(data)
    return out


@contextlib.asynccontextmanager
async def _node(tmp: Path) -> AsyncIterator[tuple[node.NodeServer, asyncio.Task[None], dict[str, int]]]:
    """A claimed node server with no group yet (the test adds the first); yields it, its run
    task and the read ends of the groups' log FIFOs (opened as containerd does)."""
    path = str(tmp / "node-t.sock")
    claimed = node.claim(path)
    assert claimed is not None
    first = _settings(tmp, "first")
    readers = {"first": os.open(Path(first.bundle) / "log", os.O_RDONLY | os.O_NONBLOCK)}
    router = group_logs.GroupLogRouter("", NS, "-")
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    root.handlers[:] = [router]
    root.setLevel(logging.INFO)
    n = node.NodeServer(path, claimed[0], claimed[1], Zygote(), Reaper(), router)
    gsock = tmp / "first.sock"
    n.serve_group(n.add_group(first, str(gsock), _listen(gsock)))
    task = asyncio.get_running_loop().create_task(n.run())
    try:
        yield n, task, readers
    finally:
        n.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, 15)
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for fd in readers.values():
            os.close(fd)


def _read(fd: int) -> str:
    try:
        return os.read(fd, 1 << 16).decode()
    except BlockingIOError:
        return ""


def test_claim_is_exclusive_and_private(tmp_path: Path) -> None:
    path = str(tmp_path / "node-x.sock")
    first = node.claim(path)
    assert first is not None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert node.claim(path) is None  # the lock is held
    first[0].close()
    os.close(first[1])
    again = node.claim(path)  # a dead node server's socket is replaced
    assert again is not None
    again[0].close()
    os.close(again[1])


def test_groups_are_adopted_served_and_shut_down_one_by_one(tmp_path: Path) -> None:
    async def main() -> None:
        async with _node(tmp_path) as (n, task, readers):
            second = _settings(tmp_path, "second")
            readers["second"] = os.open(Path(second.bundle) / "log", os.O_RDONLY | os.O_NONBLOCK)
            gsock = tmp_path / "second.sock"
            lst = _listen(gsock)
            pid = await asyncio.to_thread(nh.offer, n.path, lst, settings_doc(second, str(gsock)))
            lst.close()  # start's copy
            assert pid == os.getpid()
            assert set(n.groups) == {str(tmp_path / "first.sock"), str(gsock)}
            for name in ("first", "second"):
                resp = await _call(tmp_path / f"{name}.sock", "Connect", pb.ConnectRequest(id=name),
                                   pb.ConnectResponse)
                assert resp.shim_pid == os.getpid()  # type: ignore[attr-defined]
            # each group's records reach its own FIFO, with its id
            second_log = _read(readers["second"])
            assert "id=second" in second_log
            assert "serving group" in second_log
            assert "id=second" not in _read(readers["first"])
            # Shutdown of one group: its socket goes, the other serves on
            await _call(gsock, "Shutdown", pb.ShutdownRequest(id="second"), empty_pb2.Empty)
            for _ in range(1000):
                if not gsock.exists() and str(gsock) not in n.groups:
                    break
                await asyncio.sleep(0.01)
            assert not gsock.exists()
            assert str(gsock) not in n.groups
            assert n.adopting
            resp = await _call(tmp_path / "first.sock", "Connect", pb.ConnectRequest(id="first"),
                               pb.ConnectResponse)
            assert resp.shim_pid == os.getpid()  # type: ignore[attr-defined]
            # the last group's Shutdown: the node stops adopting and returns
            await _call(tmp_path / "first.sock", "Shutdown", pb.ShutdownRequest(id="first"), empty_pb2.Empty)
            await asyncio.wait_for(task, 15)
            assert not n.adopting
            assert not os.path.exists(n.path)
            assert not os.path.exists(nh.lock_path(n.path))  # no lock file left behind either
            late = _listen(tmp_path / "late.sock")
            assert nh.offer(n.path, late, settings_doc(_settings(tmp_path, "late"), str(tmp_path / "late.sock"))) \
                is None
            late.close()

    asyncio.run(main())


def _exchange(n: node.NodeServer, data: bytes, fds: list[int]) -> bytes:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        socket.send_fds(ours, [data], fds)
        n.handle(theirs)
        return ours.recv(256)


def test_bad_offers_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with _node(tmp_path) as (n, _task, _readers):
            before = set(n.groups)
            gsock = tmp_path / "g.sock"
            lst = _listen(gsock)
            doc = settings_doc(_settings(tmp_path, "g"), str(gsock))
            assert _exchange(n, b"garbage", [lst.fileno()]).startswith(b"refused not a runwasm handoff offer")
            assert _exchange(n, nh.encode_offer(doc), []).startswith(b"refused expected exactly one")
            r, w = os.pipe()
            assert _exchange(n, nh.encode_offer(doc), [r]) == b"refused the fd offered is not a unix stream socket"
            os.close(r)
            os.close(w)
            udp = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            assert _exchange(n, nh.encode_offer(doc), [udp.fileno()]).startswith(b"refused the fd offered")
            udp.close()
            bad_doc = {**doc, "unknown_field": 1}
            assert _exchange(n, nh.encode_offer(bad_doc), [lst.fileno()]).startswith(b"refused")
            # the same group twice
            first_doc = settings_doc(replace(_settings(tmp_path, "dup"), id="dup"), str(tmp_path / "first.sock"))
            assert b"already served here" in _exchange(n, nh.encode_offer(first_doc), [lst.fileno()])
            assert set(n.groups) == before
            assert gsock.exists()  # a refused group's socket is the start's, untouched
            n.stop_adopting()
            assert _exchange(n, nh.encode_offer(doc), [lst.fileno()]) == b"refused the node server is exiting"
            lst.close()

    asyncio.run(main())


def test_another_user_is_refused() -> None:
    """SO_PEERCRED: a peer that is not root gets a refusal even when it can reach the socket."""
    tmp_path = Path(tempfile.mkdtemp(prefix="rwnode-", dir="/tmp"))  # pytest's tmp_path is 0700

    async def main() -> None:
        async with _node(tmp_path) as (n, _task, _readers):
            os.chmod(tmp_path, 0o711)
            os.chmod(n.path, 0o666)
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the other user's start
                try:
                    os.close(r)
                    os.setgroups([])
                    os.setresgid(65534, 65534, 65534)
                    os.setresuid(65534, 65534, 65534)
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                    s.settimeout(20)
                    s.connect(n.path)
                    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    socket.send_fds(s, [b"RWN1\0{}"], [probe.fileno()])
                    os.write(w, s.recv(256))
                except BaseException as err:  # noqa: BLE001 - reported to the test
                    os.write(w, f"child failed: {err!r}".encode())
                finally:
                    os._exit(0)
            os.close(w)
            out = await asyncio.to_thread(os.read, r, 256)
            os.close(r)
            await asyncio.to_thread(os.waitpid, pid, 0)
            assert out == b"refused not the node server's user"
            assert len(n.groups) == 1

    if os.geteuid() != 0:
        pytest.skip("needs root to run a peer as another user")
    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_router_sends_records_to_their_group_and_honours_each_groups_debug() -> None:
    router = group_logs.GroupLogRouter("", NS, "-")
    router.fallback.setLevel(logging.INFO)
    pipes = {name: os.pipe() for name in ("quiet", "loud")}
    logger = logging.getLogger("runwasm.test.router")
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    root.handlers[:] = [router]
    root.setLevel(logging.INFO)
    try:
        router.add("quiet", pipes["quiet"][1], NS, "q")
        router.add("loud", pipes["loud"][1], NS, "l", debug=True)  # its Debug option: root goes DEBUG
        for name in ("quiet", "loud"):
            ctx = contextvars.copy_context()
            ctx.run(group_logs.current.set, name)
            ctx.run(logger.debug, "dbg %s", name)
            ctx.run(logger.info, "inf %s", name)
        quiet = os.read(pipes["quiet"][0], 65536).decode()
        loud = os.read(pipes["loud"][0], 65536).decode()
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for r, w in pipes.values():
            os.close(r)
            os.close(w)
    assert "inf quiet" in quiet
    assert "id=q" in quiet
    assert "dbg quiet" not in quiet
    assert "loud" not in quiet
    assert "dbg loud" in loud
    assert "inf loud" in loud
    assert "id=l" in loud


def test_a_dead_zygote_stops_adoption(tmp_path: Path) -> None:
    """The shared zygote died: no pod of this node could start a task, so the next offer is
    refused and the node adopts no more (the next start forks a new node server)."""
    async def main() -> None:
        async with _node(tmp_path) as (n, _task, _readers):
            zygote = Zygote()
            zygote.start()
            n._zygote = zygote
            try:
                assert not zygote.gone()
                os.kill(zygote.pid, signal.SIGKILL)
                await asyncio.to_thread(os.waitpid, zygote.pid, 0)
                assert zygote.gone()
                gsock = tmp_path / "z.sock"
                lst = _listen(gsock)
                doc = settings_doc(_settings(tmp_path, "z"), str(gsock))
                assert _exchange(n, nh.encode_offer(doc), [lst.fileno()]) == b"refused the node server's zygote is gone"
                assert not n.adopting
                assert not os.path.exists(n.path)
                lst.close()
            finally:
                zygote.close()

    asyncio.run(main())
