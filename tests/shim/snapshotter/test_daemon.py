"""``runwasm snapshotter`` start-up errors: one line on stderr, exit 1, nothing clobbered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "runwasm"
    return subprocess.run([str(exe), "snapshotter", *args], capture_output=True, text=True, timeout=60, check=False)


def test_corrupt_metadata_is_reported_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    meta = tmp_path / "root" / "metadata.json"
    meta.write_text('{"version": 1, "snapshots": [')
    res = _run("--root", str(tmp_path / "root"), "--address", str(tmp_path / "s.sock"))
    assert res.returncode == 1
    assert f"failed to load {meta}" in res.stderr
    assert meta.read_text() == '{"version": 1, "snapshots": ['


def test_address_that_is_not_a_socket_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("keep me")
    res = _run("--root", str(tmp_path / "root"), "--address", str(tmp_path / "file"))
    assert res.returncode == 1
    assert "exists and is not a socket" in res.stderr
    assert (tmp_path / "file").read_text() == "keep me"
