"""End to end through the real ``containerd-shim-runwasm-v1`` binary, with the harness as containerd.

Every test runs in both start protocols (``legacy`` fixture) and checks afterwards that no shim
server of its harness is left and nothing stays mounted under the harness directory.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from runwasm.shim.api.events import task_pb2 as events_pb2
from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
from runwasm.shim.harness.driver import NAMESPACE, Harness, run_task, runtime_options
from runwasm.shim.ttrpc.status import Code, RpcError
from tests.shim.e2e import helpers as e
from tests.shim.e2e.helpers import GROUP_ANNOTATION, run

GO_ZERO_SECONDS = -62135596800
CREATED, RUNNING, STOPPED = 1, 2, 3


IN_PROCESS = 'WasmExecutor = "inprocess"'
"""Runtime options that keep wasmtime-py in the workload (exact proc_exit codes 126..255)."""


async def _run_to_files(h: Harness, cid: str, bundle: Path, config_body: str | None = None) -> tuple[int, str, str]:
    out, err = h.root / f"{cid}.out", h.root / f"{cid}.err"
    ofd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o644)
    efd = os.open(err, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        result = await run_task(h, cid, bundle, stdout=ofd, stderr=efd,
                                **({"options": runtime_options(config_body=config_body)} if config_body else {}))
    finally:
        os.close(ofd)
        os.close(efd)
    assert result.pid > 0
    return result.exit_status, out.read_text(), err.read_text()


def test_hello(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        status, out, err = await _run_to_files(h, "hello", e.make_bundle(h, "hello", "hello.wasm"))
        assert (status, out, err) == (0, "hello from wasm\n", "")

    run(legacy, body)


def test_args_and_env(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        bundle = e.make_bundle(h, "argsenv", "argsenv.wasm", ["one", "two words", ""], ["FOO=bar", "EMPTY="])
        status, out, _ = await _run_to_files(h, "argsenv", bundle)
        assert status == 0
        lines = out.splitlines()
        assert lines[:4] == ["arg: /argsenv.wasm", "arg: one", "arg: two words", "arg: "]
        envs = [x for x in lines if x.startswith("env: ")]
        assert envs[-2:] == ["env: FOO=bar", "env: EMPTY="]
        assert any(x.startswith("env: PATH=") for x in envs)
        assert not any("TTRPC_ADDRESS" in x or "RUNWASM" in x for x in envs)  # only the spec's env

    run(legacy, body)


@pytest.mark.parametrize("code", [0, 7, 125, 255])
def test_exit_codes(legacy: bool, code: int) -> None:
    async def body(h: Harness) -> None:
        status, out, _ = await _run_to_files(h, f"exit{code}", e.make_bundle(h, f"exit{code}", f"exit{code}.wasm"),
                                             IN_PROCESS)
        assert status == code
        assert out == ""
        if code < 126:  # wasmtime-min (the default route) too; 126..255 it reports as 1 with wasmtime's message
            assert (await _run_to_files(h, f"m{code}", e.make_bundle(h, f"m{code}", f"exit{code}.wasm")))[0] == code
        else:
            status, _, err = await _run_to_files(h, f"m{code}", e.make_bundle(h, f"m{code}", f"exit{code}.wasm"))
            assert (status, "exit with invalid exit status outside of [0..126)" in err) == (1, True)

    run(legacy, body)


def test_exit_from_argument(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        status, _, _ = await _run_to_files(h, "exitarg", e.make_bundle(h, "exitarg", "exit_arg.wasm", ["42"]))
        assert status == 42

    run(legacy, body)


def test_trap_under_wasmtime_min(legacy: bool) -> None:
    """The default route: wasmtime-min's own report, naming the module by the fd it ran."""
    async def body(h: Harness) -> None:
        status, out, err = await _run_to_files(h, "trap", e.make_bundle(h, "trap", "trap.wasm"))
        assert (status, out) == (134, "about to trap\n")
        assert err.startswith("Error: failed to run main module `/proc/self/fd/")
        assert "    1: error while executing at wasm backtrace:\n    0:     0x5f - <unknown>!boom\n" in err
        assert err.endswith("    2: wasm trap: wasm `unreachable` instruction executed\n\n")

    run(legacy, body)


def test_trap(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        bundle = e.make_bundle(h, "trap", "trap.wasm")
        status, out, err = await _run_to_files(h, "trap", bundle, IN_PROCESS)
        assert status == 134
        assert out == "about to trap\n"
        # the task's stderr, as `wasmtime run` prints it: what ctr run / kubectl logs show
        assert err.startswith("Error: failed to run main module `/trap.wasm`\n\nCaused by:\n")
        assert "    1: error while executing at wasm backtrace:\n    0:     0x5f - <unknown>!boom\n" in err
        assert err.endswith("    2: wasm trap: wasm `unreachable` instruction executed\n")
        assert bundle / "shim.log" in h.log_files
        await e.log_with(bundle / "shim.log", "trap", "unreachable", "/trap.wasm")

    run(legacy, body)


@pytest.mark.parametrize(("module", "banner"), [("spin.wasm", "spinning\n"), ("sleep.wasm", "sleeping\n")])
@pytest.mark.parametrize(("sig", "expected"), [(signal.SIGKILL, 137), (signal.SIGTERM, 143)])
def test_kill(legacy: bool, module: str, banner: str, sig: int, expected: int) -> None:
    async def body(h: Harness) -> None:
        cid = module.removesuffix(".wasm")
        bundle = e.make_bundle(h, cid, module)
        async with e.shim(h, cid, bundle) as t:
            io = e.stdio(h, cid)
            pid = await e.create(t, cid, bundle, io)
            waiter = asyncio.create_task(e.wait(t, cid))
            assert await e.start(t, cid) == pid
            await io.wait_output(banner)  # the guest is now spinning / blocked in poll_oneoff
            assert (await e.state(t, cid)).status == RUNNING
            await e.kill(t, cid, sig)
            waited = await asyncio.wait_for(waiter, 15)
            assert waited.exit_status == expected
            await io.finish()
            assert io.output() == banner
            st = await e.state(t, cid)
            assert (st.status, st.exit_status) == (STOPPED, expected)
            deleted = await e.delete(t, cid)
            assert (deleted.pid, deleted.exit_status) == (pid, expected)
            await e.shutdown(t, cid)

    run(legacy, body)


def test_events_in_order_for_instant_exit(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        status, _, _ = await _run_to_files(h, "ev", e.make_bundle(h, "ev", "exit0.wasm"))
        assert status == 0
        await h.events.wait_for("/tasks/delete", "ev")
        assert h.events.topics("ev") == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
        envs = [env for env in h.events.envelopes if env.topic.startswith("/tasks/")]
        md = h.events.metadata[:len(h.events.envelopes)]
        for env, meta in zip(h.events.envelopes, md, strict=True):
            if env in envs:
                assert env.namespace == NAMESPACE
                assert env.HasField("timestamp")
                assert meta.get("containerd-namespace-ttrpc") == [NAMESPACE]
                assert not env.event.type_url.startswith("type.googleapis.com/")
        by_topic = {env.topic: env for env in envs}
        exit_ev = events_pb2.TaskExit.FromString(by_topic["/tasks/exit"].event.value)
        start_ev = events_pb2.TaskStart.FromString(by_topic["/tasks/start"].event.value)
        delete_ev = events_pb2.TaskDelete.FromString(by_topic["/tasks/delete"].event.value)
        assert exit_ev.container_id == exit_ev.id == "ev"
        assert exit_ev.pid == start_ev.pid == delete_ev.pid > 0
        assert exit_ev.exit_status == delete_ev.exit_status == 0
        assert exit_ev.exited_at.seconds > 0

    run(legacy, body)


def test_kill_after_exit_is_not_found(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        bundle = e.make_bundle(h, "k", "exit7.wasm")
        async with e.shim(h, "k", bundle) as t:
            await e.create(t, "k", bundle)
            waiter = asyncio.create_task(e.wait(t, "k"))
            await e.start(t, "k")
            assert (await waiter).exit_status == 7
            with pytest.raises(RpcError) as err:
                await e.kill(t, "k", signal.SIGKILL)
            assert err.value.code == Code.NOT_FOUND
            assert "not found" in err.value.message
            await e.delete(t, "k")
            with pytest.raises(RpcError) as err:  # gone after Delete: NotFound too
                await e.state(t, "k")
            assert err.value.code == Code.NOT_FOUND
            await e.shutdown(t, "k")

    run(legacy, body)


def test_delete_while_running_is_failed_precondition(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        bundle = e.make_bundle(h, "run", "spin.wasm")
        async with e.shim(h, "run", bundle) as t:
            io = e.stdio(h, "run")
            await e.create(t, "run", bundle, io)
            await e.start(t, "run")
            await io.wait_output("spinning")
            with pytest.raises(RpcError) as err:
                await e.delete(t, "run")
            assert err.value.code == Code.FAILED_PRECONDITION
            assert "running" in err.value.message
            assert (await e.state(t, "run")).status == RUNNING  # unaffected
            await e.kill(t, "run", signal.SIGKILL)
            assert (await e.wait(t, "run")).exit_status == 137
            await io.finish()
            await e.delete(t, "run")
            await e.shutdown(t, "run")

    run(legacy, body)


def test_state_before_start_and_after_exit(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        bundle = e.make_bundle(h, "st", "exit7.wasm")
        async with e.shim(h, "st", bundle) as t:
            io = e.stdio(h, "st")
            pid = await e.create(t, "st", bundle, io)
            st = await e.state(t, "st")
            assert (st.id, st.pid, st.status, st.exit_status) == ("st", pid, CREATED, 0)
            assert st.bundle == str(bundle)
            assert (st.stdout, st.stderr) == (io.stdout, io.stderr)
            assert st.exited_at.seconds == GO_ZERO_SECONDS
            await start_and_wait(t, "st")
            st = await e.state(t, "st")
            assert (st.status, st.exit_status, st.pid) == (STOPPED, 7, pid)
            assert st.exited_at.seconds > 0
            await io.finish()
            assert (await e.delete(t, "st")).exit_status == 7
            await e.shutdown(t, "st")

    run(legacy, body)


async def start_and_wait(t: e.TaskClient, cid: str) -> pb.WaitResponse:
    waiter = asyncio.create_task(e.wait(t, cid))
    await e.start(t, cid)
    return await asyncio.wait_for(waiter, 15)


def test_wait_on_created_then_deleted(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        bundle = e.make_bundle(h, "cd", "hello.wasm")
        async with e.shim(h, "cd", bundle) as t:
            io = e.stdio(h, "cd")
            pid = await e.create(t, "cd", bundle, io)
            waiter = asyncio.create_task(e.wait(t, "cd"))
            await asyncio.sleep(0.1)
            assert not waiter.done()  # Wait blocks on a created process
            deleted = await e.delete(t, "cd")
            waited = await asyncio.wait_for(waiter, 10)
            assert waited.exit_status == deleted.exit_status
            assert deleted.pid == pid
            assert deleted.exit_status != 0  # killed before it ran
            await io.finish()
            assert io.output() == ""  # user code never ran
            await e.shutdown(t, "cd")
        await h.events.wait_for("/tasks/delete", "cd")
        topics = h.events.topics("cd")
        assert topics[0] == "/tasks/create"
        assert topics[-1] == "/tasks/delete"
        assert "/tasks/start" not in topics

    run(legacy, body)


def test_duplicate_create_is_already_exists(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        bundle = e.make_bundle(h, "dup", "hello.wasm")
        async with e.shim(h, "dup", bundle) as t:
            await e.create(t, "dup", bundle)
            with pytest.raises(RpcError) as err:
                await e.create(t, "dup", bundle)
            assert err.value.code == Code.ALREADY_EXISTS
            assert "'dup'" in err.value.message
            await e.delete(t, "dup")
            await e.shutdown(t, "dup")

    run(legacy, body)


def _spec(args: list[str]) -> dict[str, object]:
    return {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"args": args, "cwd": "/", "env": ["PATH=/bin"]}}


@pytest.mark.parametrize(("config", "files", "code", "needle"), [
    (_spec(["/missing.wasm"]), {}, Code.NOT_FOUND, "/missing.wasm"),
    (_spec(["/data.bin"]), {"data.bin": b"PK\x03\x04 not wasm"}, Code.INVALID_ARGUMENT, "/data.bin"),
    (_spec(["/hello.wasm#nosuchexport"]), {"hello.wasm": None}, Code.INVALID_ARGUMENT, "nosuchexport"),
    ({"ociVersion": "1.0.2", "process": {"args": "/hello.wasm", "cwd": "/"}}, {}, Code.INVALID_ARGUMENT,
     "process.args"),
    ({"ociVersion": "1.0.2", "process": {"args": ["/x"], "cwd": "/", "env": [1]}}, {}, Code.INVALID_ARGUMENT,
     "process.env"),
    ("{not json", {}, Code.INVALID_ARGUMENT, "config.json"),
], ids=["missing", "not-wasm", "no-export", "args-type", "env-type", "not-json"])
def test_create_errors(legacy: bool, config: dict[str, object] | str, files: dict[str, bytes | None],
                       code: Code, needle: str) -> None:
    async def body(h: Harness) -> None:
        real = {n: (b if b is not None else e.wasm(n).read_bytes()) for n, b in files.items()}
        bundle = e.raw_bundle(h, "bad", config, real)
        async with e.shim(h, "bad", bundle) as t:
            with pytest.raises(RpcError) as err:
                await e.create(t, "bad", bundle)
            assert err.value.code == code, err.value.message
            assert needle in err.value.message
            with pytest.raises(RpcError) as gone:
                await e.state(t, "bad")
            assert gone.value.code == Code.NOT_FOUND
            await e.shutdown(t, "bad")
        assert h.events.topics("bad") == []

    run(legacy, body)


def test_create_never_answers_unimplemented(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        bundle = e.make_bundle(h, "ck", "hello.wasm")
        async with e.shim(h, "ck", bundle) as t:
            with pytest.raises(RpcError) as err:
                await t.call("Create", pb.CreateTaskRequest(id="ck", bundle=str(bundle), checkpoint="/cp"),
                             pb.CreateTaskResponse)
            assert err.value.code in (Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION)
            with pytest.raises(RpcError) as err:
                await t.call("Create", pb.CreateTaskRequest(id="bad id!", bundle=str(bundle)), pb.CreateTaskResponse)
            assert err.value.code == Code.INVALID_ARGUMENT
            await e.shutdown(t, "ck")

    run(legacy, body)


def test_unimplemented_rpc(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        bundle = e.make_bundle(h, "un", "hello.wasm")
        async with e.shim(h, "un", bundle) as t:
            with pytest.raises(RpcError) as err:
                await t.call("Checkpoint", pb.CheckpointTaskRequest(id="un", path="/x"), pb.StateResponse)
            assert err.value.code == Code.UNIMPLEMENTED == 12
            await e.shutdown(t, "un")

    run(legacy, body)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_containers_share_one_shim(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        ann = {GROUP_ANNOTATION: "pod1"}
        b1 = e.make_bundle(h, "a1", "exit7.wasm", annotations=ann)
        b2 = e.make_bundle(h, "a2", "spin.wasm", annotations=ann)
        addr1, version = await h.shim_start("a1", b1)
        addr2, _ = await h.shim_start("a2", b2)
        assert addr1 == addr2
        assert (b1 / "address").read_text() == (b2 / "address").read_text() == addr1
        try:
            async with e.connected(addr1, version) as t:
                shim_pid = (await t.call("Connect", pb.ConnectRequest(id="a1"), pb.ConnectResponse)).shim_pid
                io2 = e.stdio(h, "a2")
                await e.create(t, "a1", b1)
                await e.create(t, "a2", b2, io2)
                assert (await start_and_wait(t, "a1")).exit_status == 7
                await e.start(t, "a2")
                await io2.wait_output("spinning")
                await e.delete(t, "a1")
                await e.shutdown(t, "a1")
                await asyncio.sleep(0.3)
                assert _alive(shim_pid)  # a2 still lives there
                assert (await e.state(t, "a2")).status == RUNNING
                await e.kill(t, "a2", signal.SIGKILL)
                assert (await e.wait(t, "a2")).exit_status == 137
                await io2.finish()
                await e.delete(t, "a2")
                await e.shutdown(t, "a2")
            await e.poll_until(lambda: not _alive(shim_pid), 10, f"shim server {shim_pid} to exit")
        finally:
            await h.shim_delete("a1", b1)
            await h.shim_delete("a2", b2)
        assert h.events.topics("a1")[0] == "/tasks/create"
        assert h.events.topics("a2")[0] == "/tasks/create"

    run(legacy, body)


def test_distinct_groups_get_distinct_shims(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        b1 = e.make_bundle(h, "g1", "exit0.wasm", annotations={GROUP_ANNOTATION: "x"})
        b2 = e.make_bundle(h, "g2", "exit0.wasm", annotations={GROUP_ANNOTATION: "y"})
        addrs = []
        try:
            for cid, b in (("g1", b1), ("g2", b2)):
                addr, version = await h.shim_start(cid, b)
                addrs.append(addr)
                async with e.connected(addr, version) as t:
                    await e.shutdown(t, cid)
        finally:
            await h.shim_delete("g1", b1)
            await h.shim_delete("g2", b2)
        assert addrs[0] != addrs[1]

    run(legacy, body)


def test_wasm_task_with_terminal_writes_to_the_stdout_fifo(legacy: bool) -> None:
    """``ctr run -t`` of a Wasm image: no pty is made, the guest writes to the stdout FIFO."""
    async def body(h: Harness) -> None:
        bundle = e.make_bundle(h, "tty", "hello.wasm")
        io = e.stdio(h, "tty")
        async with e.shim(h, "tty", bundle) as t:
            await t.call("Create", pb.CreateTaskRequest(id="tty", bundle=str(bundle), stdout=io.stdout,
                                                        terminal=True), pb.CreateTaskResponse)
            await e.start(t, "tty")
            assert (await e.wait(t, "tty")).exit_status == 0
            await e.delete(t, "tty")
            await e.shutdown(t, "tty")
        await io.finish()
        assert io.output() == "hello from wasm\n"

    run(legacy, body)
