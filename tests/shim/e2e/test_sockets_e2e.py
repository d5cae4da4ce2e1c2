"""``WasmNetwork = true`` through the real shim: a WASI 0.2 command component
(``fixtures/wasm/tcp_client.wat``) run by ``wasmtime run`` inside the task's network namespace
talks TCP to an echo server living in that namespace; without the option its sockets are
refused (in-process wasmtime-py grants no address); a preview 1 module with the option fails
Create; the exit status propagates; Kill reaches a guest blocked on a socket."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
from runwasm.shim.harness.driver import Harness, runtime_options
from runwasm.shim.ttrpc.status import Code, RpcError
from tests.shim.e2e import helpers as e

SERVER = r"""
import socket, sys, threading
def listener():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8); return s
echo, silent, closed = listener(), listener(), listener()
closed_port = closed.getsockname()[1]; closed.close()   # nothing listens there: connection refused
held = []
def serve_echo():
    while True:
        c, _ = echo.accept()
        line = c.makefile("rb").readline()
        c.sendall(b"echo: " + line); c.close()
def serve_silent():                                        # accepts, never answers
    while True:
        held.append(silent.accept()[0])
threading.Thread(target=serve_echo, daemon=True).start()
threading.Thread(target=serve_silent, daemon=True).start()
print(echo.getsockname()[1], silent.getsockname()[1], closed_port, flush=True)
sys.stdin.read()                                           # until the test closes our stdin
"""


@contextlib.contextmanager
def netns_with_servers() -> Iterator[tuple[int, int, int, int]]:
    """A new network namespace (loopback up) holding an echo server, a silent server and a closed
    port: yields (pid whose /proc/<pid>/ns/net it is, echo port, silent port, closed port)."""
    proc = subprocess.Popen(["unshare", "--net", "sh", "-c", f'ip link set lo up && exec "{sys.executable}" -c "$0"',
                             SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "the echo server in its network namespace did not start"
        echo, silent, closed = (int(x) for x in line.split())
        yield proc.pid, echo, silent, closed
    finally:
        proc.kill()
        proc.wait()


def _bundle(h: Harness, cid: str, module: str, args: list[str], netns_pid: int) -> Path:
    bundle = e.make_bundle(h, cid, module, args=args)
    spec = json.loads((bundle / "config.json").read_text())
    spec["linux"]["namespaces"].append({"type": "network", "path": f"/proc/{netns_pid}/ns/net"})
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


async def _create(t: e.TaskClient, cid: str, bundle: Path, io: e.Stdio, network: bool | None) -> int:
    req = pb.CreateTaskRequest(id=cid, bundle=str(bundle), stdin="", stdout=io.stdout, stderr=io.stderr)
    if network is not None:
        req.options.CopyFrom(runtime_options(config_body=f"WasmNetwork = {str(network).lower()}"))
    return int((await t.call("Create", req, pb.CreateTaskResponse)).pid)


async def _run(h: Harness, cid: str, port: int, netns_pid: int, network: bool | None) -> tuple[int, str, str]:
    bundle = _bundle(h, cid, "tcp_client.wasm", [str(port)], netns_pid)
    async with e.shim(h, cid, bundle) as t:
        io = e.stdio(h, cid)
        await _create(t, cid, bundle, io, network)
        await e.start(t, cid)
        status = (await e.wait(t, cid)).exit_status
        await io.finish()
        await e.delete(t, cid)
        await e.shutdown(t, cid)
    return status, io.output(), io.errors()


def test_component_talks_tcp_over_the_tasks_loopback() -> None:
    with netns_with_servers() as (ns, echo, _, _):
        async def body(h: Harness) -> None:
            status, out, err = await _run(h, "net1", echo, ns, True)
            assert (status, out) == (0, "reply: echo: hello over wasi:sockets\n"), err

        e.run(False, body)


@pytest.mark.parametrize("network", [None, False])
def test_without_wasm_network_the_guest_gets_no_socket(network: bool | None) -> None:
    with netns_with_servers() as (ns, echo, _, _):
        async def body(h: Harness) -> None:
            status, out, err = await _run(h, "net2", echo, ns, network)
            # in-process wasmtime-py: create-tcp-socket answers access-denied (error-code 1); run -> err -> 1
            assert (status, out) == (1, "error: c 01\n"), err

        e.run(False, body)


def test_exit_status_of_the_cli_route_propagates() -> None:
    with netns_with_servers() as (ns, _, _, closed):
        async def body(h: Harness) -> None:
            status, out, err = await _run(h, "net3", closed, ns, True)
            assert (status, out) == (1, "error: f 14\n"), err  # connection-refused at finish-connect

        e.run(False, body)


def test_kill_reaches_a_guest_blocked_on_its_socket() -> None:
    with netns_with_servers() as (ns, _, silent, _):
        async def body(h: Harness) -> None:
            bundle = _bundle(h, "net4", "tcp_client.wasm", [str(silent)], ns)
            async with e.shim(h, "net4", bundle) as t:
                io = e.stdio(h, "net4")
                pid = await _create(t, "net4", bundle, io, True)
                await e.start(t, "net4")
                await io.wait_output("reply: ", timeout=60)  # connected, written, now blocked reading
                assert Path(f"/proc/{pid}/exe").resolve().name.startswith("wasmtime")
                assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink(f"/proc/{ns}/ns/net")
                await e.kill(t, "net4", signal.SIGTERM)
                assert (await e.wait(t, "net4")).exit_status == 143  # SIGTERM as is (wasmtime run has no drain)
                await io.finish()
                await e.delete(t, "net4")
                await e.shutdown(t, "net4")

        e.run(False, body)


def test_a_preview1_module_with_wasm_network_fails_create() -> None:
    with netns_with_servers() as (ns, _, _, _):
        async def body(h: Harness) -> None:
            bundle = _bundle(h, "net5", "hello.wasm", [], ns)
            async with e.shim(h, "net5", bundle) as t:
                io = e.stdio(h, "net5")
                with pytest.raises(RpcError) as info:
                    await _create(t, "net5", bundle, io, True)
                assert info.value.code == Code.INVALID_ARGUMENT
                assert "WASI preview 1 core module, and preview 1 has no socket calls" in info.value.message
                await io.finish()
                await e.shutdown(t, "net5")

        e.run(False, body)
