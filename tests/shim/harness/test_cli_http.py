"""``runwasm run --net`` of a wasi:http/proxy component: the real CLI, shim and ``wasmtime
serve``, reached in the container's network namespace (a veth pair to the host); Ctrl-C
(SIGINT to ``runwasm run``) kills and deletes the task, leaving no server behind."""

from __future__ import annotations

import os
import signal
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


def test_runwasm_run_net_serves_a_proxy_component() -> None:
    if os.geteuid() != 0:
        pytest.skip("runwasm run needs root")
    token = f"TOKEN={uuid.uuid4().hex}"
    proc = subprocess.Popen([RUNWASM, "run", "--net", "-e", token, str(built_fixture("wasm", "http_hello.wasm"))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (pids := _serving(token)) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert len(pids) == 1, pids
        assert Path(f"/proc/{pids[0]}/ns/net").resolve() != Path("/proc/self/ns/net").resolve()
        text = http_get("http://127.0.0.1:8080/cli", netns_pid=pids[0])
        assert text.splitlines()[0] == "hello from wasi:http path=/cli instance-requests=1"
        assert token in text.splitlines()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
        assert "Serving HTTP on http://0.0.0.0:8080/" in err
        assert "was killed and deleted" in err
        assert proc.returncode != 0
        assert _serving(token) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
