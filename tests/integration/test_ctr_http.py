"""``ctr run`` of a wasi:http/proxy component (the ``http_hello`` fixture) on containerd 1.6 and
2.3.4: served by ``wasmtime serve`` in the task's network namespace, a fresh instance per
request, ``ctr task kill`` (SIGTERM) drains it to exit 0, SIGKILL gives 137."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from tests.integration.daemon import Containerd, wait_status
from tests.integration.watch import EventWatcher

pytestmark = pytest.mark.integration


def http_get(url: str, netns_pid: int | None = None, timeout: float = 60) -> str:
    """GET ``url`` (from the network namespace of ``netns_pid`` if given), retrying until it answers."""
    argv = ["curl", "-sS", "--max-time", "10", "--fail", url]
    if netns_pid is not None:
        argv = ["nsenter", f"--net=/proc/{netns_pid}/ns/net", *argv]
    deadline = time.monotonic() + timeout
    while True:
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
        if res.returncode == 0:
            return res.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"GET {url} failed: {res.stderr.strip()}")
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ctr_run_serves_in_task_netns_and_sigterm_drains(containerd: Containerd, wasm_images: dict[str, str]) -> None:
    cid = "http-netns"
    containerd.run(wasm_images["http_hello"], cid, rm=False, detach=True, check=True,
                   extra=("--env", "GREETING=from-ctr"))
    pid, _ = wait_status(containerd, cid, "RUNNING")
    first = http_get("http://127.0.0.1:8080/one?x=1", netns_pid=pid)
    second = http_get("http://127.0.0.1:8080/two", netns_pid=pid)
    assert first.splitlines()[0] == "hello from wasi:http path=/one?x=1 instance-requests=1"
    assert second.splitlines()[0] == "hello from wasi:http path=/two instance-requests=1"
    assert "GREETING=from-ctr" in first.splitlines()
    with EventWatcher(containerd) as events:
        containerd.ctr("task", "kill", "-s", "SIGTERM", cid)
        exit_event = events.wait_for("/tasks/exit", cid, timeout=30)
    assert exit_event.body.get("exit_status", 0) == 0  # proto3 JSON leaves a zero out
    assert wait_status(containerd, cid, "STOPPED")[0] == pid
    containerd.ctr("task", "rm", cid)  # ctr prints an exit code only when it is not 0
    containerd.ctr("containers", "rm", cid)


def test_ctr_run_net_host_address_from_env_and_sigkill(containerd: Containerd, wasm_images: dict[str, str]) -> None:
    cid = "http-host"
    port = _free_port()
    containerd.run(wasm_images["http_hello"], cid, rm=False, detach=True, check=True,
                   extra=("--net-host", "--env", f"WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:{port}"))
    wait_status(containerd, cid, "RUNNING")
    text = http_get(f"http://127.0.0.1:{port}/host")
    assert text.startswith("hello from wasi:http path=/host instance-requests=1\n")
    with EventWatcher(containerd) as events:
        containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
        assert events.wait_for("/tasks/exit", cid, timeout=30).body["exit_status"] == 137
    containerd.ctr("task", "rm", cid)
    containerd.ctr("containers", "rm", cid)
