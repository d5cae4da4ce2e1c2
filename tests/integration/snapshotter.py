"""A ``runwasm snapshotter`` daemon for integration tests and ``make bench``, and the containerd
config that plugs it in (the docs/examples snippets with the test's socket path).

``SnapshotterDaemon(root, address, containerd_address)`` runs the real console command in its own
process group; ``stop()`` sends SIGTERM (or SIGKILL) and reaps it. ``proxy_config(flavour, sock)``
is the body of ``docs/examples/containerd-{1,2}.x-snapshotter.toml`` (minus its ``version``
line, which the private daemon's config already has) with the socket path replaced.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.integration.daemon import REPO, venv_bin

EXAMPLE_SOCKET = "/run/runwasm-snapshotter/snapshotter.sock"
EXAMPLES = REPO / "docs" / "examples"
SNAPSHOTTER = "runwasm"
SMALL = "runwasm-small"  # a second instance (tests: on a tiny tmpfs)


def proxy_config(flavour: str, socket: Path, name: str = SNAPSHOTTER) -> str:
    """The docs/examples snippet for ``flavour`` with ``socket``; ``name`` renames the plugins
    (``runwasm`` -> ``name``, ``runwasm-diff`` -> ``name-diff``) for a second instance."""
    example = "containerd-2.x-snapshotter.toml" if flavour == "2.3" else "containerd-1.x-snapshotter.toml"
    text = (EXAMPLES / example).read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("version")]
    if name != SNAPSHOTTER:
        lines = [ln for ln in lines if ln.strip() != "[proxy_plugins]"]
        lines = [ln.replace("proxy_plugins.runwasm", f"proxy_plugins.{name}").replace('"runwasm', f'"{name}')
                 for ln in lines]
    return "\n" + "\n".join(lines).replace(EXAMPLE_SOCKET, str(socket)) + "\n"


class SnapshotterDaemon:
    def __init__(self, root: Path, address: Path, containerd_address: str) -> None:
        self.root = root
        self.address = address
        self.containerd_address = containerd_address
        self.log_path = address.parent / "snapshotter.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [str(venv_bin() / "runwasm"), "snapshotter", "--root", str(self.root), "--address", str(self.address),
                 "--containerd-address", self.containerd_address],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f"runwasm snapshotter exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"runwasm snapshotter did not listen within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        """True once the socket accepts connections (a stale file from a killed daemon does not)."""
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(self.address))
            except OSError:
                return False
        return True

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(prefix)]


def loops_backed_by(root: Path) -> list[str]:
    out = []
    for dev in Path("/sys/block").glob("loop*"):
        try:
            backing = (dev / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing.startswith(str(root) + "/"):
            out.append(f"/dev/{dev.name} -> {backing}")
    return out


def store_files(root: Path) -> list[str]:
    """Snapshot dirs and layer mountpoints left in the store."""
    return sorted(str(p.relative_to(root)) for sub in ("s", "m") if (root / sub).is_dir()
                  for p in (root / sub).iterdir())
