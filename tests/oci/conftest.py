"""Shared fixtures for tests/oci: a tiny Wasm module, mount/loop leak checks, private containerd."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# (module (func (export "_start"))) as a binary, so these tests need no wat2wasm.
HELLO_WASM = bytes.fromhex("0061736d0100000001040160000003020100070a01065f73746172740000"
                           "0a040102000b")


@pytest.fixture
def wasm_module(tmp_path: Path) -> Path:
    path = tmp_path / "hello.wasm"
    path.write_bytes(HELLO_WASM)
    return path


def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as fh:
        return {line.split()[4] for line in fh}


def _loops() -> str:
    if shutil.which("losetup") is None:
        return ""
    return subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout


@pytest.fixture
def no_leaks(tmp_path: Path) -> Iterator[Path]:
    """Fail the test if it leaves a mount under tmp_path or a new loop device behind."""
    before_loops = _loops()
    yield tmp_path
    leaked = sorted(m for m in _mounts() if m.startswith(str(tmp_path)))
    for m in reversed(leaked):
        subprocess.run(["umount", "-l", m], check=False)
    assert not leaked, f"mounts left behind: {leaked}"
    assert _loops() == before_loops, "loop devices left behind"


class Containerd:
    """A private containerd 1.6 daemon (CRI disabled) with its own root/state/sockets."""

    NAMESPACE = "runwasm-oci-test"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.sock = base / "c.sock"
        cfg = base / "config.toml"
        cfg.write_text(f"""version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
""")
        self._log = open(base / "containerd.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(["containerd", "--config", str(cfg)], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while self.ctr("version", check=False).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"containerd did not start; see {base}/containerd.log")
            time.sleep(0.1)

    def ctr(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "-a", str(self.sock), "-n", self.NAMESPACE, *args],
                              capture_output=True, text=True, check=check, timeout=timeout)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        # Paths containerd 1.6 writes outside its root (stack.md §6): remove only what is ours.
        shutil.rmtree(Path("/run/containerd/runc") / self.NAMESPACE, ignore_errors=True)
        for cg in Path("/sys/fs/cgroup").glob(f"*/{self.NAMESPACE}"):
            try:
                cg.rmdir()
            except OSError:
                pass
        if Path("/run/containerd").exists():
            subprocess.run(["find", "/run/containerd", "-depth", "-type", "d", "-empty", "-delete"],
                           check=False)


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Containerd]:
    if os.geteuid() != 0 or shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("needs root and containerd/ctr")
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"rw-ctrd-{os.getpid()}"
    base.mkdir(parents=True, exist_ok=True)  # short path: unix socket paths are capped at 108 bytes
    daemon = Containerd(base)
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(base, ignore_errors=True)
