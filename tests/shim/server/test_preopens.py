"""Spec mounts as Wasm preopens: ro/rro honoured, what a preopen cannot enforce refused."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from runwasm.oci.runtime_spec import Mount
from runwasm.shim.common.errors import InvalidArgumentError
from runwasm.shim.server.preopens import wasm_preopens


@pytest.mark.parametrize(("options", "read_only"), [
    (["rbind"], False),
    (["rbind", "rw", "rprivate"], False),
    (["rbind", "ro"], True),
    (["bind", "rro"], True),
    (["rbind", "rro", "rrw"], False),
    (["rbind", "ro", "rrw"], False),
    (["rbind", "nosuid", "noexec", "ro", "rslave"], True),
])
def test_bind_mount_read_only(tmp_path: Path, options: list[str], read_only: bool) -> None:
    m = Mount(destination="/data", type="bind", source=str(tmp_path), options=tuple(options))
    assert wasm_preopens("c1", (m,)) == ((str(tmp_path), "/data", read_only),)


@pytest.mark.parametrize(("option", "needle"), [
    ("nodev", "mount option 'nodev' cannot be honoured by a Wasm preopen"),
    ("noatime", "mount option 'noatime' cannot be honoured"),
    ("rnosymfollow", "mount option 'rnosymfollow' cannot be honoured"),
    ("bogus", "unknown mount option 'bogus'"),
    ("size=1k", "a bind mount takes no filesystem data"),
])
def test_options_a_preopen_cannot_honour_are_refused(tmp_path: Path, option: str, needle: str) -> None:
    ok = Mount(destination="/ok", type="bind", source=str(tmp_path), options=("rbind",))
    m = Mount(destination="/data", type="bind", source=str(tmp_path), options=("rbind", option))
    with pytest.raises(InvalidArgumentError, match=needle) as info:
        wasm_preopens("c1", (ok, m))
    assert "mounts[1] (destination '/data')" in str(info.value)


def test_non_bind_and_file_mounts_are_logged_not_exposed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "hosts"
    f.write_text("")
    mounts = (Mount("/proc", "proc", "proc"), Mount("/etc/hosts", "bind", str(f), ("rbind", "ro")),
              Mount("/data", "", str(tmp_path), ("rbind",)))
    with caplog.at_level(logging.INFO, logger="runwasm.shim.server.preopens"):
        assert wasm_preopens("c1", mounts) == ((str(tmp_path), "/data", False),)
    assert "/proc (proc), /etc/hosts (bind of a non-directory)" in caplog.text
