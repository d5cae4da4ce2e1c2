"""``StandbySeconds`` under containerd 1.6: consecutive ``ctr run``s are served by one warm server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.daemon import Containerd

pytestmark = pytest.mark.integration


def _servers(d: Containerd) -> set[int]:
    """Our shim server processes (their zygotes have the same command line; take the parents)."""
    pids = {p for p in d.our_processes() if b"_runwasm_serve" in Path(f"/proc/{p}/cmdline").read_bytes()}
    return {p for p in pids if int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1]) not in pids}


def test_consecutive_runs_reuse_one_warm_server(containerd: Containerd, wasm_images: dict[str, str],
                                                tmp_path: Path) -> None:
    cfg = tmp_path / "runwasm.toml"
    cfg.write_text("StandbySeconds = 2\n")
    extra = ("--runtime-config-path", str(cfg))
    first = containerd.run(wasm_images["hello"], "sb-a", extra=extra)
    assert (first.returncode, first.stdout) == (0, "hello from wasm\n"), first.output
    servers = _servers(containerd)
    assert len(servers) == 1, servers  # the idle server stands by
    second = containerd.run(wasm_images["exit7"], "sb-b", extra=extra)
    assert second.returncode == 7, second.output
    assert _servers(containerd) == servers  # the same process served the second container
    deadline = time.monotonic() + 10
    while _servers(containerd) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _servers(containerd), "the standby server did not exit after StandbySeconds"
