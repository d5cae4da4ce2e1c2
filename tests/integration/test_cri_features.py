"""containerd 2.3.4's CRI reads runwasm's ``-info`` features: ``crictl info`` lists the runtime
handler ``runwasm`` with ``recursive_read_only_mounts`` (the CRI allows ``rro`` volumes only for
handlers whose features document lists ``rro``). A CRI-enabled daemon of its own, no pods."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon import CONTAINERD23_MISSING, containerd23_bin, venv_bin

pytestmark = pytest.mark.integration

CRITOOLS_ENV = "RUNWASM_CRITOOLS_BIN"


def _crictl() -> Path:
    repo = Path(__file__).resolve().parents[2]
    return Path(os.environ.get(CRITOOLS_ENV) or repo.parent / "shared/tools/cri-tools-1.36.0/bin") / "crictl"


@pytest.fixture
def cri_daemon() -> Iterator[tuple[str, Path]]:
    bin_dir, crictl = containerd23_bin(), _crictl()
    if bin_dir is None:
        pytest.skip(CONTAINERD23_MISSING)
    if not crictl.is_file():
        pytest.skip(f"crictl not found at {str(crictl)!r} (set {CRITOOLS_ENV} to cri-tools' bin directory)")
    d = Path(tempfile.mkdtemp(prefix="rwcri-", dir="/tmp"))
    (d / "config.toml").write_text(
        "version = 3\n"
        'disabled_plugins = ["io.containerd.nri.v1.nri"]\n'  # NRI's socket is a global path
        f'root = "{d}/root"\nstate = "{d}/state"\n'
        f'[grpc]\n  address = "{d}/c.sock"\n[ttrpc]\n  address = "{d}/c.sock.ttrpc"\n'
        f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{d}/opt"\n'
        '[plugins."io.containerd.cri.v1.runtime"]\n  restrict_oom_score_adj = true\n'
        '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runwasm]\n'
        '  runtime_type = "io.containerd.runwasm.v1"\n')
    env = dict(os.environ, PATH=os.pathsep.join([str(venv_bin()), str(bin_dir), os.environ.get("PATH", "")]))
    with open(d / "containerd.log", "wb") as log:
        proc = subprocess.Popen([str(bin_dir / "containerd"), "--config", str(d / "config.toml")], env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield str(crictl), d
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        with contextlib.suppress(OSError):
            subprocess.run(["umount", "-R", "-l", str(d)], capture_output=True, check=False)
        shutil.rmtree(d, ignore_errors=True)


def test_cri_runtime_handler_features(cri_daemon: tuple[str, Path]) -> None:
    crictl, d = cri_daemon
    deadline = time.monotonic() + 30
    while True:
        res = subprocess.run([crictl, "--runtime-endpoint", f"unix://{d}/c.sock", "info"], capture_output=True,
                             text=True, timeout=30)
        if res.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert res.returncode == 0, res.stderr + (d / "containerd.log").read_text(errors="replace")[-2000:]
    handlers = {h.get("name", ""): h.get("features", {}) for h in json.loads(res.stdout)["runtimeHandlers"]}
    assert handlers["runwasm"] == {"recursive_read_only_mounts": True}, handlers
