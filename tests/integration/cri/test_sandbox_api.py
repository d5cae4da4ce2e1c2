"""The Sandbox API (``sandboxer = "shim"``, handler ``runwasm-sandbox`` from
docs/examples/containerd-2.x-sandbox-api.toml) through containerd 2.3.4's CRI, driven by
``crictl`` and, for ``UpdatePodSandboxResources`` (crictl 1.36 has no command for it), a CRI
gRPC call: the pod is one runwasm shim server from ``runp`` on, with no pause container; a Wasm
and a busybox container share the namespaces its holder process keeps; stop and remove leave
no process, mount, cgroup or network namespace behind."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.cri.conftest import BUSYBOX_REF, EXEC_REF
from tests.integration.cri.crid import SANDBOX_API_HANDLER, CriContainerd
from tests.integration.daemon import CGROUP_ROOT

pytestmark = pytest.mark.integration

NO_SANDBOX_API = ("containerd 1.6 has no Sandbox API: `sandboxer = \"shim\"` (containerd.runtime.sandbox.v1) "
                  "arrived in containerd 2.0")


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _servers(cri: CriContainerd, group: str) -> list[int]:
    """Shim servers of our daemon for ``group`` (their command line is ``-id <group> ...
    _runwasm_serve``): not the zygote and workloads a server forks, which inherit it."""
    serving = {p for p in cri.our_processes() if "_runwasm_serve" in (argv := _cmdline(p)) and group in argv}
    return sorted(p for p in serving if _ppid(p) not in serving)


def _ns(pid: int | str, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def _wait_state(cri: CriContainerd, cid: str, want: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (state := json.loads(cri.crictl_run("inspect", cid).stdout)["status"]["state"]) != want:
        if time.monotonic() > deadline:
            raise AssertionError(f"container {cid} is {state}, expected {want}")
        time.sleep(0.1)


def _update_pod_resources(cri: CriContainerd, pod: str, memory: int) -> None:
    """CRI ``UpdatePodSandboxResources`` over gRPC (messages: proto/runwasm/shim/api/cri/runtime.proto)."""
    import grpc

    from runwasm.shim.api.cri import runtime_pb2

    res = runtime_pb2.LinuxContainerResources(memory_limit_in_bytes=memory, cpu_shares=512)
    req = runtime_pb2.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod, resources=res)
    with grpc.insecure_channel(f"unix://{cri.address}") as channel:
        call = channel.unary_unary("/runtime.v1.RuntimeService/UpdatePodSandboxResources",
                                   request_serializer=runtime_pb2.UpdatePodSandboxResourcesRequest.SerializeToString,
                                   response_deserializer=runtime_pb2.UpdatePodSandboxResourcesResponse.FromString)
        call(req, timeout=60)


def test_sandbox_api_pod_is_one_shim_server(cri: CriContainerd) -> None:
    if cri.flavour != "2.3":
        pytest.skip(NO_SANDBOX_API)
    pod_cfg = cri.write_json("pod-sbx.json", {
        "metadata": {"name": "sbx", "namespace": "default", "uid": "uid-sbx", "attempt": 0},
        "hostname": "wasm-pod", "log_directory": str(cri.log_dir / "sbx"),
        "linux": {"cgroup_parent": f"/{cri.cgroup_name}",
                  "security_context": {"namespace_options": {"pid": 1}}}})  # CONTAINER, as the kubelet's default
    before = set(cri.our_processes())  # other tests' pods of this session may still run
    pod = cri.crictl_run("runp", "--runtime", SANDBOX_API_HANDLER, str(pod_cfg)).stdout.strip()
    info = json.loads(cri.crictl_run("inspectp", pod).stdout)
    assert info["status"]["state"] == "SANDBOX_READY", info["status"]
    # one server, and no pause container: the pod is not a container in containerd's store
    servers = _servers(cri, pod)
    assert len(servers) == 1, f"expected one runwasm shim server for the pod, found {servers}"
    assert pod not in cri.ctr("containers", "ls", "-q").stdout.split()
    # CRI shows runwasm's verbose SandboxStatus info (the namespace holder) at the top level
    assert info["phase"] == "running", info
    holder = int(info["holder_pid"])
    assert holder not in servers, (holder, servers)
    assert _ppid(holder) == servers[0], (holder, servers)
    assert info["netns"] in cri.pod_netns, "the pod's network namespace was not recorded for the leak check"
    assert os.stat(info["netns"]).st_ino == _ns(holder, "net"), "the holder is not in the pod's network namespace"
    assert _ns(holder, "uts") != _ns("self", "uts")
    assert _ns(holder, "ipc") != _ns("self", "ipc")
    # the holder sits where CRI would put the pause container: <cgroup_parent>/<pod id>
    assert f"/{cri.cgroup_name}/{pod}" in Path(f"/proc/{holder}/cgroup").read_text()

    wasm_cfg = cri.write_json("sbx-wasm.json", {"metadata": {"name": "app"}, "image": {"image": EXEC_REF},
                                                "log_path": "app.log", "linux": {}})
    side_cfg = cri.write_json("sbx-side.json", {
        "metadata": {"name": "side"}, "image": {"image": BUSYBOX_REF},
        "command": ["sh", "-c", "exec sleep 3600"], "log_path": "side.log", "linux": {}})
    app = cri.crictl_run("create", pod, str(wasm_cfg), str(pod_cfg)).stdout.strip()
    side = cri.crictl_run("create", pod, str(side_cfg), str(pod_cfg)).stdout.strip()
    cri.crictl_run("start", app)
    cri.crictl_run("start", side)
    _wait_state(cri, app, "CONTAINER_RUNNING")
    _wait_state(cri, side, "CONTAINER_RUNNING")
    assert _servers(cri, pod) == servers
    assert _servers(cri, app) == _servers(cri, side) == [], "a container got a shim server of its own"

    # exec of both kinds; the sidecar shares the holder's network, UTS and IPC namespaces
    assert cri.crictl_run("exec", app, "/hello.wasm").stdout == "hello from wasm\n"
    assert cri.crictl_run("exec", side, "hostname").stdout == "wasm-pod\n"
    for kind in ("net", "uts", "ipc"):
        inode = cri.crictl_run("exec", side, "stat", "-L", "-c", "%i", f"/proc/self/ns/{kind}").stdout.strip()
        assert int(inode) == _ns(holder, kind), kind

    for cid in (app, side):
        stats = json.loads(cri.crictl_run("stats", "-o", "json", "--id", cid).stdout)["stats"]
        assert len(stats) == 1, stats
        assert int(stats[0]["memory"]["workingSetBytes"]["value"]) > 0, stats
    # pod stats: CRI reads the pod cgroup, which holds the holder and both containers
    podstats = json.loads(cri.crictl_run("statsp", "-o", "json", "--id", pod).stdout)["stats"]
    assert len(podstats) == 1, podstats
    assert int(podstats[0]["linux"]["memory"]["workingSetBytes"]["value"]) > 0, podstats

    # containerd 2.3.4 accepts the update and keeps it in its store; it has no UpdateSandbox RPC
    # for a shim sandboxer, so the pod (holder, server, containers) runs on untouched
    _update_pod_resources(cri, pod, 256 << 20)
    after = json.loads(cri.crictl_run("inspectp", pod).stdout)
    assert after["info"]["resources"]["linux"] == {"cpu_shares": 512, "memory_limit_in_bytes": 256 << 20}, after
    assert after["holder_pid"] == str(holder)
    assert after["status"]["state"] == "SANDBOX_READY"
    assert _servers(cri, pod) == servers
    _wait_state(cri, app, "CONTAINER_RUNNING")
    _wait_state(cri, side, "CONTAINER_RUNNING")

    cri.crictl_run("stopp", pod)
    assert json.loads(cri.crictl_run("inspectp", pod).stdout)["status"]["state"] == "SANDBOX_NOTREADY"
    cri.crictl_run("rmp", pod)
    assert pod not in cri.crictl_run("pods", "-q").stdout.split()
    deadline = time.monotonic() + 30
    while set(cri.our_processes()) - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(cri.our_processes()) - before == set(), "shim or workload processes outlived crictl rmp"
    assert not os.path.lexists(info["netns"]), "the pod's network namespace was left"
    assert [str(d) for d in CGROUP_ROOT.glob(f"*/{cri.cgroup_name}/{pod}")] == [], "the holder's cgroup was left"


def test_sandbox_api_pod_after_its_server_is_killed(cri: CriContainerd) -> None:
    """A SIGKILLed shim server: containerd runs ``delete`` on the sandbox bundle only, which cleans
    the pod's containers it recorded and kills the namespace holder through its cgroup record;
    stopp/rmp then leave nothing (no process, no cgroup under the pod's, no netns)."""
    if cri.flavour != "2.3":
        pytest.skip(NO_SANDBOX_API)
    pod_cfg = cri.write_json("pod-sbx-kill.json", {
        "metadata": {"name": "sbxkill", "namespace": "default", "uid": "uid-sbxkill", "attempt": 0},
        "log_directory": str(cri.log_dir / "sbxkill"), "linux": {"cgroup_parent": f"/{cri.cgroup_name}"}})
    before = set(cri.our_processes())
    pod = cri.crictl_run("runp", "--runtime", SANDBOX_API_HANDLER, str(pod_cfg)).stdout.strip()
    side_cfg = cri.write_json("sbx-kill-side.json", {
        "metadata": {"name": "side"}, "image": {"image": BUSYBOX_REF},
        "command": ["sh", "-c", "exec sleep 3600"], "log_path": "side.log", "linux": {}})
    side = cri.crictl_run("create", pod, str(side_cfg), str(pod_cfg)).stdout.strip()
    cri.crictl_run("start", side)
    _wait_state(cri, side, "CONTAINER_RUNNING")
    info = json.loads(cri.crictl_run("inspectp", pod).stdout)
    holder = int(info["holder_pid"])
    [server] = _servers(cri, pod)
    os.kill(server, signal.SIGKILL)

    deadline = time.monotonic() + 60
    while Path(f"/proc/{holder}").exists():
        assert time.monotonic() < deadline, f"the namespace holder {holder} outlived its server"
        time.sleep(0.2)
    cri.crictl_run("stopp", pod)
    cri.crictl_run("rmp", pod)
    assert pod not in cri.crictl_run("pods", "-q").stdout.split()
    while set(cri.our_processes()) - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(cri.our_processes()) - before == set(), "shim or workload processes outlived crictl rmp"
    assert not os.path.lexists(info["netns"]), "the pod's network namespace was left"
    # nothing left in the pod cgroup: neither the holder's cgroup nor the sidecar's (whose
    # processes would keep it)
    assert [str(d) for d in CGROUP_ROOT.glob(f"*/{cri.cgroup_name}/*") if d.name in (pod, side)] == []
