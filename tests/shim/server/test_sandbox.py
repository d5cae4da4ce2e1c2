"""The Sandbox API's state machine (``SandboxService``) and its ttrpc adapter (``sandbox_rpc``):
bad input (unknown id, double create, wrong state, bad options) answers the right ttrpc code.
The namespace holder is a fake here (one layer under test); tests/shim/server/test_sandbox_holder.py
launches the real one and tests/integration/cri/test_sandbox_api.py runs the whole pod."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from google.protobuf import any_pb2

from runwasm.shim.api.cri import runtime_pb2
from runwasm.shim.api.runtime.sandbox.v1 import sandbox_pb2 as pb
from runwasm.shim.common.errors import ShimError
from runwasm.shim.server.sandbox import (
    POD_CONFIG_TYPE,
    STATE_NOTREADY,
    STATE_READY,
    ExitCallback,
    HolderSpec,
    SandboxService,
    parse_pod_config,
)
from runwasm.shim.server.sandbox_rpc import SERVICE, SPEC_TYPE, SandboxRpc, handlers
from runwasm.shim.ttrpc.server import RequestContext
from runwasm.shim.ttrpc.status import Code, RpcError

NETNS = "/var/run/netns/cni-test"


class FakeLauncher:
    """Records launches; ``signal(SIGTERM)`` makes the holder 'exit' with 0 on the next loop turn."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.specs: list[HolderSpec] = []
        self.signals: list[tuple[int, int]] = []
        self.released: list[int] = []
        self.fail = fail
        self._on_exit: ExitCallback | None = None

    async def launch(self, spec: HolderSpec, on_exit: ExitCallback) -> int:
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        self.specs.append(spec)
        self._on_exit = on_exit
        return 4242

    def signal(self, pid: int, sig: int) -> None:
        self.signals.append((pid, sig))
        if sig in (signal.SIGTERM, signal.SIGKILL) and self._on_exit is not None:
            asyncio.get_running_loop().call_soon(self._on_exit, 128 + sig if sig == signal.SIGKILL else 0, 99)

    def release(self, pid: int) -> None:
        self.released.append(pid)

    def die(self, status: int) -> None:
        assert self._on_exit is not None
        self._on_exit(status, 77)


def _config(**linux: Any) -> tuple[str, bytes]:
    cfg = runtime_pb2.PodSandboxConfig(hostname="pod-h", metadata=runtime_pb2.PodSandboxMetadata(name="p", namespace="ns"))
    cfg.linux.cgroup_parent = "/kubepods/pod1"
    for key, value in linux.items():
        if key == "sysctls":
            cfg.linux.sysctls.update(value)
        elif key == "ns":
            cfg.linux.security_context.namespace_options.CopyFrom(value)
    return POD_CONFIG_TYPE, cfg.SerializeToString()


def _service(launcher: FakeLauncher | None = None) -> tuple[SandboxService, FakeLauncher, list[str]]:
    launcher = launcher or FakeLauncher()
    calls: list[str] = []

    async def kill_containers() -> None:
        calls.append("kill_containers")

    svc = SandboxService("k8s.io", launcher, kill_containers, lambda: calls.append("shutdown"), clock=lambda: 1_000)
    return svc, launcher, calls


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


# --- options ---------------------------------------------------------------------------------

def test_pod_config_is_parsed_from_cri_options() -> None:
    c = parse_pod_config(*_config(sysctls={"net.ipv4.ip_forward": "1", "kernel.shmmax": "1000"}))
    assert (c.hostname, c.cgroup_parent, c.name, c.namespace) == ("pod-h", "/kubepods/pod1", "p", "ns")
    assert c.sysctls == (("kernel.shmmax", "1000"), ("net.ipv4.ip_forward", "1"))
    # the URL typeurl gives, with or without a host prefix
    assert parse_pod_config(f"type.googleapis.com/{POD_CONFIG_TYPE}", b"").hostname == ""


@pytest.mark.parametrize(("options", "needle"), [
    (("runtime.v1.ContainerConfig", b""), "expected a runtime.v1.PodSandboxConfig"),
    ((POD_CONFIG_TYPE, b"\xff\xff"), "cannot decode"),
    (_config(sysctls={"kernel.panic": "1"}), "linux.sysctls['kernel.panic'] is not namespaced"),
    (_config(sysctls={"net.core.somaxconn": "1"},
             ns=runtime_pb2.NamespaceOption(network=runtime_pb2.NODE)), "linux.sysctls['net.core.somaxconn']"),
    (_config(ns=runtime_pb2.NamespaceOption(pid=runtime_pb2.TARGET)), "namespace_options.pid = 3"),
])
def test_bad_options_are_invalid_argument(options: tuple[str, bytes], needle: str) -> None:
    svc, launcher, _ = _service()
    with pytest.raises(ShimError) as info:
        svc.create("sb1", "/b", NETNS, options, {})
    assert getattr(info.value, "status", "") == "invalid_argument"
    assert needle in str(info.value)
    assert svc.sandbox is None  # nothing recorded: a retry can create it
    assert launcher.specs == []


def test_pod_user_namespace_is_unimplemented() -> None:
    svc, _, _ = _service()
    ns = runtime_pb2.NamespaceOption(userns_options=runtime_pb2.UserNamespace(mode=runtime_pb2.POD))
    with pytest.raises(ShimError, match="user namespaces") as info:
        svc.create("sb1", "/b", NETNS, _config(ns=ns), {})
    assert getattr(info.value, "status", "") == "unimplemented"


def test_rootfs_and_missing_netns_are_refused() -> None:
    svc, _, _ = _service()
    with pytest.raises(ShimError, match="no root filesystem") as info:
        svc.create("sb1", "/b", NETNS, None, {}, rootfs_count=1)
    assert getattr(info.value, "status", "") == "invalid_argument"
    with pytest.raises(ShimError, match="netns_path is empty"):
        svc.create("sb1", "/b", "", None, {})
    svc.create("sb1", "/b", "", _config(ns=runtime_pb2.NamespaceOption(network=runtime_pb2.NODE)), {})


# --- lifecycle -------------------------------------------------------------------------------

def test_lifecycle_create_start_stop_wait_shutdown() -> None:
    async def scenario() -> None:
        svc, launcher, calls = _service()
        svc.create("sb1", "/bundle", NETNS, _config(), {"a": "b"})
        sb, state, _ = svc.status("sb1", False)
        assert (state, sb.pid) == (STATE_NOTREADY, 0)
        pid, created, spec = await svc.start("sb1")
        assert (pid, created) == (4242, 1_000)
        h = launcher.specs[0]
        assert (h.cgroup_path, h.netns_path, h.hostname) == ("/kubepods/pod1/sb1", NETNS, "pod-h")
        assert (h.new_pidns, h.unshare_ipc, h.unshare_uts) == (True, True, True)
        assert spec["hostname"] == "pod-h"
        assert spec["annotations"] == {"a": "b"}
        assert spec["linux"]["namespaces"] == [  # type: ignore[index]
            {"type": "network", "path": NETNS}, {"type": "ipc", "path": "/proc/4242/ns/ipc"},
            {"type": "uts", "path": "/proc/4242/ns/uts"}, {"type": "pid", "path": "/proc/4242/ns/pid"}]
        assert svc.status("sb1", False)[1] == STATE_READY
        assert svc.status("sb1", True)[2]["holder_pid"] == "4242"
        svc.ping("sb1")
        waiter = asyncio.create_task(svc.wait("sb1"))
        await asyncio.sleep(0)
        assert not waiter.done()
        await svc.stop("sb1", 5)
        assert await waiter == (0, 99)
        assert launcher.signals == [(4242, signal.SIGTERM)]
        assert launcher.released == [4242]
        assert calls == ["kill_containers"]
        await svc.stop("sb1", 5)  # idempotent
        assert launcher.signals == [(4242, signal.SIGTERM)]
        assert svc.status("sb1", False)[1] == STATE_NOTREADY
        await svc.shutdown("sb1")
        assert calls == ["kill_containers", "shutdown"]
        assert svc.sandbox is None

    run(scenario)


def test_node_namespaces_are_not_unshared() -> None:
    async def scenario() -> None:
        svc, launcher, _ = _service()
        ns = runtime_pb2.NamespaceOption(network=runtime_pb2.NODE, pid=runtime_pb2.NODE, ipc=runtime_pb2.NODE)
        svc.create("sb1", "/b", "", _config(ns=ns), {})
        _, _, spec = await svc.start("sb1")
        h = launcher.specs[0]
        assert (h.new_pidns, h.unshare_ipc, h.unshare_uts, h.hostname) == (False, False, False, "")
        assert spec["linux"]["namespaces"] == []  # type: ignore[index]

    run(scenario)


def test_holder_death_stops_the_sandbox() -> None:
    async def scenario() -> None:
        svc, launcher, _ = _service()
        svc.create("sb1", "/b", NETNS, None, {})
        await svc.start("sb1")
        launcher.die(137)
        assert await svc.wait("sb1") == (137, 77)
        assert launcher.released == [4242]
        with pytest.raises(ShimError, match="exited with status 137") as info:
            svc.ping("sb1")
        assert getattr(info.value, "status", "") == "failed_precondition"

    run(scenario)


def test_stop_of_a_created_sandbox_launches_nothing() -> None:
    async def scenario() -> None:
        svc, launcher, _ = _service()
        svc.create("sb1", "/b", NETNS, None, {})
        await svc.stop("sb1", 1)
        assert await svc.wait("sb1") == (0, 1_000)
        assert launcher.signals == []
        with pytest.raises(ShimError, match="it is stopped, expected created") as info:
            await svc.start("sb1")
        assert getattr(info.value, "status", "") == "failed_precondition"

    run(scenario)


def test_stop_during_start_kills_the_new_holder() -> None:
    async def scenario() -> None:
        svc, launcher, _ = _service()
        svc.create("sb1", "/b", NETNS, None, {})
        start = asyncio.create_task(svc.start("sb1"))
        await asyncio.sleep(0)  # the launch is under way
        await svc.stop("sb1", 1)
        with pytest.raises(ShimError, match="stopped while starting") as info:
            await start
        assert getattr(info.value, "status", "") == "failed_precondition"
        assert launcher.signals == [(4242, signal.SIGKILL)]
        await asyncio.sleep(0)  # the fake holder's exit is delivered
        assert launcher.released == [4242]

    run(scenario)


def test_failed_launch_leaves_the_sandbox_created() -> None:
    async def scenario() -> None:
        from runwasm.shim.common.errors import InvalidArgumentError

        svc, _, _ = _service(FakeLauncher(fail=InvalidArgumentError("holder set-up failed: EPERM")))
        svc.create("sb1", "/b", NETNS, None, {})
        with pytest.raises(InvalidArgumentError):
            await svc.start("sb1")
        assert svc.status("sb1", True)[2]["phase"] == "created"

    run(scenario)


# --- the ttrpc adapter: codes on the wire ----------------------------------------------------

def _call(table: dict[tuple[str, str], Any], method: str, msg: Any) -> bytes:
    ctx = RequestContext(SERVICE, method, {}, None, 0, 0)
    result: bytes = asyncio.get_event_loop().run_until_complete(table[(SERVICE, method)](msg.SerializeToString(), ctx))
    return result


def _code(table: dict[tuple[str, str], Any], method: str, msg: Any) -> tuple[Code, str]:
    with pytest.raises(RpcError) as info:
        _call(table, method, msg)
    return info.value.code, info.value.message


def test_rpc_codes_for_bad_input() -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        svc, _, _ = _service()
        table = handlers(SandboxRpc(svc), "k8s.io")
        assert {m for _s, m in table} == {"CreateSandbox", "StartSandbox", "Platform", "StopSandbox", "WaitSandbox",
                                          "SandboxStatus", "PingSandbox", "ShutdownSandbox", "SandboxMetrics"}
        # unknown id: NotFound everywhere
        for method, msg in (("StartSandbox", pb.StartSandboxRequest(sandbox_id="nope")),
                            ("PingSandbox", pb.PingRequest(sandbox_id="nope")),
                            ("SandboxStatus", pb.SandboxStatusRequest(sandbox_id="nope")),
                            ("StopSandbox", pb.StopSandboxRequest(sandbox_id="nope")),
                            ("Platform", pb.PlatformRequest(sandbox_id="nope"))):
            code, message = _code(table, method, msg)
            assert code == Code.NOT_FOUND, (method, code, message)
            assert "'nope'" in message
        create = pb.CreateSandboxRequest(sandbox_id="sb1", bundle_path="/b", netns_path=NETNS,
                                         options=any_pb2.Any(type_url=_config()[0], value=_config()[1]))
        _call(table, "CreateSandbox", create)
        assert _code(table, "CreateSandbox", create)[0] == Code.ALREADY_EXISTS
        other = pb.CreateSandboxRequest(sandbox_id="sb2", bundle_path="/b", netns_path=NETNS)
        code, message = _code(table, "CreateSandbox", other)
        assert code == Code.FAILED_PRECONDITION
        assert "already serves sandbox 'sb1'" in message
        assert _code(table, "StartSandbox", pb.StartSandboxRequest(sandbox_id="sb2"))[0] == Code.NOT_FOUND
        bad_opts = pb.CreateSandboxRequest(sandbox_id="sb3", options=any_pb2.Any(type_url="x.Y", value=b""))
        assert _code(handlers(SandboxRpc(_service()[0]), "k8s.io"), "CreateSandbox", bad_opts)[0] == \
            Code.INVALID_ARGUMENT
        # a payload that is no CreateSandboxRequest
        ctx = RequestContext(SERVICE, "CreateSandbox", {}, None, 0, 0)
        with pytest.raises(RpcError) as info:
            loop.run_until_complete(table[(SERVICE, "CreateSandbox")](b"\xff\xff\xff", ctx))
        assert info.value.code == Code.INVALID_ARGUMENT

        started = pb.StartSandboxResponse.FromString(_call(table, "StartSandbox", pb.StartSandboxRequest(sandbox_id="sb1")))
        assert started.pid == 4242
        assert started.spec.type_url == SPEC_TYPE
        assert json.loads(started.spec.value)["hostname"] == "pod-h"
        assert _code(table, "StartSandbox", pb.StartSandboxRequest(sandbox_id="sb1"))[0] == Code.FAILED_PRECONDITION
        platform = pb.PlatformResponse.FromString(_call(table, "Platform", pb.PlatformRequest(sandbox_id="sb1")))
        assert platform.platform.os == "linux"
        assert platform.platform.architecture  # Go's GOARCH name, e.g. amd64
        status = pb.SandboxStatusResponse.FromString(
            _call(table, "SandboxStatus", pb.SandboxStatusRequest(sandbox_id="sb1", verbose=True)))
        assert (status.sandbox_id, status.pid, status.state) == ("sb1", 4242, STATE_READY)
        assert status.info["netns"] == NETNS
        # the pod cgroup of this fake pod does not exist
        code, message = _code(table, "SandboxMetrics", pb.SandboxMetricsRequest(sandbox_id="sb1"))
        assert code == Code.NOT_FOUND, message
        assert "/kubepods/pod1" in message
    finally:
        loop.close()
        asyncio.set_event_loop(None)
