"""``runwasm run`` of a wasi:http/proxy component: the real CLI, shim and ``wasmtime serve``,
on the address ``WASMTIME_HTTP_PROXY_SOCKET_ADDR`` names (the host's network namespace: the
bundle the CLI makes has none); Ctrl-C (SIGINT to ``runwasm run``) kills and deletes the task,
leaving no server behind. (The netns cases are the shim e2e, ctr and CRI tests.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import built_fixture
from tests.integration.test_ctr_http import http_get

pytestmark = pytest.mark.privileged
RUNWASM = str(Path(sys.executable).parent / "runwasm")


def _serving(token: str) -> list[int]:
    """Pids of processes whose command line carries ``token`` (the guest env we passed)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if token.encode() in cmd and b"serve" in cmd:
                out.append(int(entry))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_runwasm_run_serves_a_proxy_component() -> None:
    if os.geteuid() != 0:
        pytest.skip("runwasm run needs root")
    token = f"TOKEN={uuid.uuid4().hex}"
    port = _free_port()
    proc = subprocess.Popen([RUNWASM, "run", "-e", token, "-e", f"WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:{port}",
                             str(built_fixture("wasm", "http_hello.wasm"))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (pids := _serving(token)) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert len(pids) == 1, pids
        text = http_get(f"http://127.0.0.1:{port}/cli")
        assert text.splitlines()[0] == "hello from wasi:http path=/cli instance-requests=1"
        assert token in text.splitlines()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
        assert f"Serving HTTP on http://127.0.0.1:{port}/" in err
        assert "was killed and deleted" in err
        assert proc.returncode != 0
        assert _serving(token) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
