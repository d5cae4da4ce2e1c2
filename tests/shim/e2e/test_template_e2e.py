"""The warm template (shim/template/) through the real binary: used when present, bypassed when
dead or refusing, root only, and no exit status or clean-up is lost when it or a server it
forked is SIGKILLed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from runwasm.shim.harness.driver import Harness, shim_command
from runwasm.shim.template import client, key, process
from tests.shim.e2e.helpers import (
    GROUP_ANNOTATION,
    create,
    delete,
    kill,
    make_bundle,
    poll_until,
    run,
    server_pids,
    shim,
    shutdown,
    start,
    wait,
)


def _template_pid(directory: Path) -> int | None:
    path = Path(key.pid_path(str(directory / f"template-{key.install_key()}.sock")))
    try:
        pid = int(path.read_text())
        alive = key.TEMPLATE_ACTION.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if alive and (directory / f"template-{key.install_key()}.sock").exists() else None


def ensure_template(directory: Path, *, other_than: int | None = None) -> int:
    """A live template of this installation in ``directory`` (launched if needed)."""
    deadline = time.monotonic() + 30
    launched = False
    while time.monotonic() < deadline:
        pid = _template_pid(directory)
        if pid is not None and pid != other_than:
            return pid
        if not launched and pid is None:
            client.launch(shim_command()[0])
            launched = True
        time.sleep(0.05)
    raise AssertionError(f"no template came up in {directory}")


def _forked_by(pid: int) -> int | None:
    """The template a server was forked from (its environment says so), None if exec'd."""
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = item.partition(b"=")
        if name == key.ENV_FORKED_BY.encode():
            return int(value)
    return None


def _shares_pages_with(pid: int, tpl: int) -> bool:
    """Some of ``pid``'s anonymous (heap) pages are the template's, shared copy-on-write: the
    kernel reports them as Shared_Dirty, which an exec'd process never has with the template."""
    rollup = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    return int(rollup["Shared_Dirty"].split()[0]) > 0 and _forked_by(pid) == tpl


def _template_fds(pid: int, directory: Path) -> list[str]:
    """The fds of ``pid`` open on the template's lock file or listening socket (a server the
    template forks must close its listener, lock and child channels)."""
    names = {f"template-{key.install_key()}.lock", f"template-{key.install_key()}.sock"}
    paths = {str(directory / n) for n in names}
    # /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path"
    sock_path = str(directory / f"template-{key.install_key()}.sock")  # bound as sock_path.<pid>, then renamed
    sock_inodes = {f"socket:[{cols[6]}]" for cols in (line.split() for line in
                   Path("/proc/net/unix").read_text().splitlines()[1:])
                   if len(cols) > 7 and cols[7].startswith(sock_path)}
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target in paths or target in sock_inodes:
            out.append(target)
    return out


def _tag() -> str:
    return f"tpl{os.getpid()}-{time.monotonic_ns() % 10**8}"


@pytest.mark.parametrize("node_server", [True, False], ids=["node-server", "per-group"])
def test_servers_of_two_pods_are_forked_from_the_template(private_template: Path, node_server: bool) -> None:
    """Two pods: by default one node server hosts both (shim/server/node.py); with
    RUNWASM_NODE_SERVER=off one server per pod. Either way forked from the template."""
    tpl = ensure_template(private_template)
    tag = _tag()

    async def body(h: Harness) -> None:
        if not node_server:
            h.shim_env["RUNWASM_NODE_SERVER"] = "off"
        ids = [f"{tag}-a", f"{tag}-b"]
        bundles = [make_bundle(h, cid, "spin.wasm", annotations={GROUP_ANNOTATION: cid}) for cid in ids]
        async with contextlib.AsyncExitStack() as stack:
            # the second start right after the first, before the first server can listen: the
            # first start claimed the node socket before it forked that server, so the second
            # one's offer waits on it instead of forking a server of its own
            t0 = await stack.enter_async_context(shim(h, ids[0], bundles[0]))
            t1 = await stack.enter_async_context(shim(h, ids[1], bundles[1]))
            for t, cid, b in ((t0, ids[0], bundles[0]), (t1, ids[1], bundles[1])):
                await create(t, cid, b)
                await start(t, cid)
            servers = [p for p in server_pids(h.root) if os.getppid() != p]
            tops = [p for p in servers if int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
                    not in servers]
            expected = 1 if node_server else 2
            assert len(tops) == expected, f"expected {expected} server(s) for two pods, got {tops} of {servers}"
            for pid in tops:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                assert argv[-2] == b"_runwasm_serve" or b"_runwasm_serve" in argv, argv
                assert os.path.basename(argv[0].decode()) == "containerd-shim-runwasm-v1"
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                assert f"TTRPC_ADDRESS={h.events_sock}".encode() in environ
                assert _forked_by(pid) == tpl, f"server {pid} was not forked from the template {tpl}"
                assert _shares_pages_with(pid, tpl)
                assert not _template_fds(pid, private_template), "the server kept a template fd"
                assert "libssl" not in Path(f"/proc/{pid}/maps").read_text()  # asyncio imported without ssl
                assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] != str(tpl)
            for t, cid in ((t0, ids[0]), (t1, ids[1])):
                await kill(t, cid, signal.SIGKILL)
                assert (await wait(t, cid)).exit_status == 137
                await delete(t, cid)
                await shutdown(t, cid)

    run(False, body)
    assert _template_pid(private_template) == tpl


def test_a_sigkilled_template_loses_no_exit_status_and_is_replaced(private_template: Path) -> None:
    tpl = ensure_template(private_template)
    tag = _tag()

    async def body(h: Harness) -> None:
        cid = f"{tag}-k"
        bundle = make_bundle(h, cid, "spin.wasm")
        async with shim(h, cid, bundle) as t:
            await create(t, cid, bundle)
            await start(t, cid)
            os.kill(tpl, signal.SIGKILL)
            # a new template can start while the servers the dead one forked still run
            assert ensure_template(private_template, other_than=tpl) != tpl
            os.kill(_template_pid(private_template) or 0, signal.SIGKILL)
            await kill(t, cid, signal.SIGTERM)
            assert (await wait(t, cid)).exit_status == 128 + signal.SIGTERM
            await delete(t, cid)
            await shutdown(t, cid)
        # the next pod: the dead socket is bypassed (an exec'd server) and a new template launched
        cid2 = f"{tag}-n"
        bundle2 = make_bundle(h, cid2, "spin.wasm")
        async with shim(h, cid2, bundle2) as t:
            await create(t, cid2, bundle2)
            await start(t, cid2)
            (server,) = [p for p in server_pids(h.root)
                         if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1] == "1"]
            assert _forked_by(server) is None
            await kill(t, cid2, signal.SIGKILL)
            assert (await wait(t, cid2)).exit_status == 137
            await delete(t, cid2)
            await shutdown(t, cid2)

    run(False, body)
    assert ensure_template(private_template, other_than=tpl) != tpl


def test_delete_cleans_after_a_sigkilled_forked_server(private_template: Path) -> None:
    ensure_template(private_template)
    tag = _tag()

    async def body(h: Harness) -> None:
        cid = f"{tag}-s"
        bundle = make_bundle(h, cid, "spin.wasm")
        address, version = await h.shim_start(cid, bundle)
        from runwasm.shim.harness.driver import connected

        async with connected(address, version) as t:
            await create(t, cid, bundle)
            await start(t, cid)
            servers = server_pids(h.root)
            assert servers
            assert all(_forked_by(p) is not None for p in servers)
            for pid in servers:
                os.kill(pid, signal.SIGKILL)
        resp = await h.shim_delete(cid, bundle)
        assert resp.exit_status == 137
        await asyncio.sleep(0)

    run(False, body)  # run() checks no server and no mount is left


def test_only_the_templates_user_is_served(private_template: Path) -> None:
    tpl = ensure_template(private_template)
    sock_path = private_template / f"template-{key.install_key()}.sock"

    def as_nobody() -> str:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            try:
                os.setgid(65534)
                os.setuid(65534)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                s.settimeout(10)
                try:
                    s.connect(str(sock_path))
                    os.write(w, s.recv(256) or b"EOF")  # the template answers at accept, unasked
                except OSError as err:
                    os.write(w, f"error {err.errno}".encode())
            finally:
                os._exit(0)
        os.close(w)
        out = os.read(r, 256).decode()
        os.close(r)
        os.waitpid(pid, 0)
        return out

    assert as_nobody() == "error 13"  # 0700 directory, 0600 socket
    dir_mode, sock_mode = private_template.stat().st_mode, sock_path.stat().st_mode
    private_template.chmod(0o755)
    sock_path.chmod(0o666)
    try:
        assert as_nobody().startswith("refused"), "the peer-credential check let another user in"
    finally:
        private_template.chmod(dir_mode & 0o777)
        sock_path.chmod(sock_mode & 0o777)
    assert _template_pid(private_template) == tpl


def test_a_caller_in_other_namespaces_is_refused(private_template: Path) -> None:
    """A server forked by the template inherits the template's namespaces: a launcher in another
    network namespace (a containerd in its own netns, whose host-network pods must share it) is
    refused and runs the action itself."""
    from runwasm.linux import syscalls as sc

    tpl = ensure_template(private_template)
    sock_path = private_template / f"template-{key.install_key()}.sock"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            sc.unshare(sc.CLONE_NEWNET)
            req = client.encode_request(key.install_key(), key.namespaces(), "/", 0o022,
                                        [shim_command()[0], "-id", "x", "delete"], {})
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.settimeout(10)
            s.connect(str(sock_path))
            fds = b"".join(fd.to_bytes(4, "little", signed=True) for fd in (0, 1, 2))
            s.sendmsg([req], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            os.write(w, s.recv(512) or b"EOF")
        except OSError as err:
            os.write(w, f"error {err}".encode())
        finally:
            os._exit(0)
    os.close(w)
    reply = os.read(r, 512).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert reply.startswith("refused namespaces differ"), reply
    assert _template_pid(private_template) == tpl


def test_a_refusing_template_is_bypassed_and_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = Path("/run") / f"rwt-refuse-{os.getpid()}"
    d.mkdir(mode=0o700)
    monkeypatch.setenv(key.ENV_DIR, str(d))
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fake.bind(str(d / f"template-{key.install_key()}.sock"))
    fake.listen(8)
    refused: list[bytes] = []

    def serve() -> None:  # an out-of-date template: refuses every request
        while True:
            try:
                conn, _ = fake.accept()
            except OSError:
                return
            with conn:
                refused.append(conn.recv(client.MAX_REQUEST))
                conn.send(b"refused installation key or fds do not match")

    threading.Thread(target=serve, daemon=True).start()
    tag = _tag()
    try:
        async def body(h: Harness) -> None:
            cid = f"{tag}-r"
            bundle = make_bundle(h, cid, "hello.wasm")
            async with shim(h, cid, bundle) as t:
                await create(t, cid, bundle)
                await start(t, cid)
                assert (await wait(t, cid)).exit_status == 0
                await delete(t, cid)
                await shutdown(t, cid)

        run(False, body)
        assert refused, "start never asked the template"
        fake.close()
        assert ensure_template(d) > 0  # the fallback launched a real one, which took over the path
    finally:
        fake.close()
        process.stop_templates(str(d))
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


def test_the_first_start_on_a_node_launches_the_template_and_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    d = Path("/run") / f"rwt-first-{os.getpid()}"
    d.mkdir(mode=0o700)
    monkeypatch.setenv(key.ENV_DIR, str(d))
    monkeypatch.setenv(client.ENV_READY_TIMEOUT, "120")  # however busy the machine is
    tag = _tag()
    from runwasm.shim.template import dccache

    cache = Path(dccache.default_path())
    cache.unlink(missing_ok=True)  # the next boot's compiled dataclass methods: written once idle
    try:
        async def body(h: Harness) -> None:
            assert _template_pid(d) is None
            cid = f"{tag}-f"
            bundle = make_bundle(h, cid, "spin.wasm")
            async with shim(h, cid, bundle) as t:
                await create(t, cid, bundle)
                await start(t, cid)
                servers = server_pids(h.root)
                assert servers
                assert all(_forked_by(p) is not None for p in servers), "the first server was not forked from a template"
                # forked while the template imports PRELOAD_LATER at LATER_NICE: back to normal priority
                assert {os.getpriority(os.PRIO_PROCESS, p) for p in servers} == {os.getpriority(os.PRIO_PROCESS, 0)}
                await kill(t, cid, signal.SIGKILL)
                assert (await wait(t, cid)).exit_status == 137
                await delete(t, cid)
                await shutdown(t, cid)

        run(False, body)
        tpl = _template_pid(d)
        assert tpl is not None
        # node-wide: it carries none of the variables of the containerd whose start launched it
        environ = Path(f"/proc/{tpl}/environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.startswith((b"TTRPC_ADDRESS=", b"GRPC_ADDRESS=", b"NAMESPACE="))]
        deadline = time.monotonic() + 120
        while not cache.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(dccache._load(str(cache))) > 100, "the template saved no compiled dataclass methods"
        # the node server (its last pod shut down) and then the template leave no lock, socket
        # or pid file behind: one set of them per containerd would pile up in /run otherwise
        process.stop_templates(str(d))
        deadline = time.monotonic() + 60
        while _control_files(d) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _control_files(d) == []
    finally:
        process.stop_templates(str(d))
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


def _control_files(d: Path) -> list[str]:
    return sorted(f.name for f in d.iterdir() if f.suffix in (".lock", ".sock", ".pid"))


def test_concurrent_first_starts_share_one_node_server(private_template: Path) -> None:
    """Three pods' ``start``s at once on a node with no node server: one of them claims the node
    socket before it forks the server, the others hand their groups to that socket (rather than
    each forking a server of its own, as they did when only the server claimed it)."""
    ensure_template(private_template)
    tag = _tag()

    async def body(h: Harness) -> None:
        ids = [f"{tag}-c{i}" for i in range(3)]
        bundles = [make_bundle(h, cid, "spin.wasm", annotations={GROUP_ANNOTATION: cid}) for cid in ids]
        started = await asyncio.gather(*(h.shim_start(cid, b) for cid, b in zip(ids, bundles, strict=True)))
        servers = server_pids(h.root)
        tops = [p for p in servers if int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
                not in servers]
        assert len(tops) == 1, f"expected one node server for three pods, got {tops} of {servers}"
        from runwasm.shim.harness.driver import connected

        for (address, version), cid in zip(started, ids, strict=True):
            async with connected(address, version) as t:
                await shutdown(t, cid)
        await poll_until(lambda: not server_pids(h.root), 15, "the node server to exit after its last pod")

    run(False, body)


def test_sigterm_ends_every_group_of_the_node_server(private_template: Path) -> None:
    """SIGTERM of the node server: it stops adopting, closes every group's server and socket,
    exits; the next start of either pod gets a new server."""
    ensure_template(private_template)
    tag = _tag()

    async def body(h: Harness) -> None:
        ids = [f"{tag}-ta", f"{tag}-tb"]
        bundles = [make_bundle(h, cid, "spin.wasm", annotations={GROUP_ANNOTATION: cid}) for cid in ids]
        addresses = [(await h.shim_start(ids[0], bundles[0]))[0].removeprefix("unix://")]
        addresses.append((await h.shim_start(ids[1], bundles[1]))[0].removeprefix("unix://"))
        servers = server_pids(h.root)
        (server,) = [p for p in servers if int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
                     not in servers]
        assert all(os.path.exists(a) for a in addresses)
        os.kill(server, signal.SIGTERM)
        await poll_until(lambda: not server_pids(h.root), 15, "the node server to exit on SIGTERM")
        assert not any(os.path.exists(a) for a in addresses)
        # another container of pod a: same group, same socket, served by a new server
        third = f"{tag}-tc"
        again, version = await h.shim_start(third, make_bundle(h, third, "spin.wasm",
                                                               annotations={GROUP_ANNOTATION: ids[0]}))
        assert again.removeprefix("unix://") == addresses[0]
        from runwasm.shim.harness.driver import connected

        async with connected(again, version) as t:
            await shutdown(t, third)

    run(False, body)
