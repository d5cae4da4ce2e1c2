"""A private Debian ``docker-registry`` (distribution 2.8) on 127.0.0.1 for signature tests.

Each ``LocalRegistry`` has its own temporary storage and config and a free port chosen by the
kernel (bind to port 0), retried if another process takes the port before the registry binds
it; nothing fixed is shared with other test sessions. ``close()`` stops it and removes its files.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BINARY = "docker-registry"


def registry_binary() -> str | None:
    return shutil.which(BINARY)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRegistry:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rwreg-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, attempts: int = 5) -> None:
        binary = registry_binary()
        if binary is None:
            raise RuntimeError("docker-registry not installed (scripts/install-system.sh)")
        for _ in range(attempts):
            self.port = _free_port()
            cfg = self.dir / "config.yml"
            cfg.write_text("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                           f"    rootdirectory: {self.dir}/data\n  delete:\n    enabled: true\n"
                           f"http:\n  addr: 127.0.0.1:{self.port}\n")
            log = open(self.dir / "registry.log", "ab")
            try:
                self.proc = subprocess.Popen([binary, "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
            finally:
                log.close()
            deadline = time.monotonic() + 20
            while self.proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(OSError, urllib.error.URLError):
                    with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as r:
                        if r.status == 200:
                            return
                time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"docker-registry did not start: {self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "registry.log").read_text(errors="replace")[-3000:]
        return ""

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def push_archive(self, archive: Path, repo_tag: str) -> None:
        """Push an OCI archive (``pack-wasm`` output, ``skopeo`` oci-archive) with skopeo, digests kept."""
        subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
                        f"oci-archive:{archive}", f"docker://{self.host}/{repo_tag}"],
                       check=True, capture_output=True, text=True, timeout=120)
