"""wasi:http/proxy components through the real shim: ``wasmtime serve`` as the task's process,
in the task's network namespace, answering with a fresh instance per request, draining on
SIGTERM (exit 0), killed by SIGKILL (137), refusing what it cannot honour at Create."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
from runwasm.shim.harness.driver import Harness
from runwasm.shim.ttrpc.status import Code, RpcError
from tests.shim.e2e import helpers as e


async def http_get(pid: int, url: str, timeout: float = 60) -> str:
    """GET ``url`` from inside the network namespace of ``pid``, retrying until it answers."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net=/proc/{pid}/ns/net", "curl", "-sS", "--max-time", "10", "--fail", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode == 0:
            return out.decode()
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"GET {url} in the netns of {pid} failed: {err.decode().strip()}")
        await asyncio.sleep(0.2)


def _bundle(h: Harness, cid: str, env: list[str], *, readonly: bool = False, args: list[str] | None = None) -> Path:
    bundle = e.make_bundle(h, cid, "http_hello.wasm", args=args or [], env=env)
    spec = json.loads((bundle / "config.json").read_text())
    spec["linux"]["namespaces"].append({"type": "network"})  # a new netns, as `ctr run` without --net-host
    spec["root"]["readonly"] = readonly
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def test_serves_in_its_netns_fresh_instance_per_request_and_drains_on_sigterm() -> None:
    async def body(h: Harness) -> None:
        bundle = _bundle(h, "web1", ["GREETING=hi"])
        async with e.shim(h, "web1", bundle) as t:
            io = e.stdio(h, "web1")
            pid = await e.create(t, "web1", bundle, io)
            await e.start(t, "web1")
            first = await http_get(pid, "http://127.0.0.1:8080/a/b?c=1")  # the default 0.0.0.0:8080
            second = await http_get(pid, "http://127.0.0.1:8080/z")
            assert first.splitlines()[0] == "hello from wasi:http path=/a/b?c=1 instance-requests=1"
            assert second.splitlines()[0] == "hello from wasi:http path=/z instance-requests=1"
            assert "GREETING=hi" in first.splitlines()
            # the task's own network namespace: nothing listens on the host's 8080 for it
            assert Path(f"/proc/{pid}/ns/net").resolve() != Path("/proc/self/ns/net").resolve()
            await e.kill(t, "web1", signal.SIGTERM)
            resp = await e.wait(t, "web1")
            assert resp.exit_status == 0  # drained (SIGINT to wasmtime serve), not killed (143)
            await io.finish()
            assert "Serving HTTP on http://0.0.0.0:8080/" in io.errors()
            await e.delete(t, "web1")
            await e.shutdown(t, "web1")

    e.run(False, body)


def test_read_only_rootfs_and_address_from_env_then_sigkill() -> None:
    async def body(h: Harness) -> None:
        bundle = _bundle(h, "web2", ["WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:9091"], readonly=True)
        async with e.shim(h, "web2", bundle) as t:
            pid = await e.create(t, "web2", bundle)
            await e.start(t, "web2")
            text = await http_get(pid, "http://127.0.0.1:9091/ro")
            assert text.startswith("hello from wasi:http path=/ro instance-requests=1\n")
            assert "WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:9091" in text.splitlines()
            await e.kill(t, "web2", signal.SIGKILL)
            assert (await e.wait(t, "web2")).exit_status == 137
            await e.delete(t, "web2")
            await e.shutdown(t, "web2")

    e.run(False, body)


@pytest.mark.parametrize(("env", "args", "expected"), [
    ([], ["extra"], "wasmtime serve passes no arguments to the guest, and process.args has ['extra']"),
    (["WASMTIME_HTTP_PROXY_SOCKET_ADDR=localhost:80"], [], "invalid WASMTIME_HTTP_PROXY_SOCKET_ADDR='localhost:80'"),
])
def test_what_serve_cannot_honour_fails_create(env: list[str], args: list[str], expected: str) -> None:
    async def body(h: Harness) -> None:
        bundle = _bundle(h, "web3", env, args=args)
        async with e.shim(h, "web3", bundle) as t:
            with pytest.raises(RpcError) as info:
                await t.call("Create", pb.CreateTaskRequest(id="web3", bundle=str(bundle)), pb.CreateTaskResponse)
            assert expected in str(info.value)
            assert info.value.code == Code.INVALID_ARGUMENT
            await e.shutdown(t, "web3")

    e.run(False, body)


def test_serves_as_the_containers_non_root_user() -> None:
    async def body(h: Harness) -> None:
        bundle = _bundle(h, "web4", [])
        spec = json.loads((bundle / "config.json").read_text())
        spec["process"]["user"] = {"uid": 1000, "gid": 1000}
        (bundle / "config.json").write_text(json.dumps(spec))
        async with e.shim(h, "web4", bundle) as t:
            pid = await e.create(t, "web4", bundle)
            await e.start(t, "web4")
            text = await http_get(pid, "http://127.0.0.1:8080/user")
            assert text.startswith("hello from wasi:http path=/user instance-requests=1\n")
            status = Path(f"/proc/{pid}/status").read_text()
            assert "Uid:\t1000\t1000\t1000\t1000" in status
            assert Path(f"/proc/{pid}/exe").resolve().name.startswith("wasmtime")
            await e.kill(t, "web4", signal.SIGTERM)
            assert (await e.wait(t, "web4")).exit_status == 0
            await e.delete(t, "web4")
            await e.shutdown(t, "web4")

    e.run(False, body)
