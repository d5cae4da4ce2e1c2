"""runc's options types: IoUid/IoGid honoured (stdio FIFO owner), fields runwasm cannot honour
refused by name, meaningless ones logged, unknown fields refused."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from runwasm.shim.common import options, wire
from runwasm.shim.common.errors import InvalidArgumentError
from runwasm.shim.server.stdio import StdioPaths, give_to

V1 = "containerd.runc.v1.Options"
CREATE = "containerd.linux.runc.CreateOptions"
RUNC = "containerd.linux.runc.RuncOptions"


def test_ctr_uidmap_on_containerd_1_6() -> None:
    """ctr 1.6 --uidmap/--gidmap: CreateOptions{IoUid: 10, IoGid: 11}."""
    parsed = options.parse((CREATE, wire.enc_int(10, 100000) + wire.enc_int(11, 100001)))
    assert parsed is not None
    assert (parsed.options.io_uid, parsed.options.io_gid) == (100000, 100001)
    assert parsed.given == {"io_uid", "io_gid"}
    merged = options.RuntimeOptions(executor="linux").merged(parsed.options, parsed.given)
    assert (merged.executor, merged.io_uid, merged.io_gid) == ("linux", 100000, 100001)


def test_runc_v1_options_with_a_type_url_prefix() -> None:
    parsed = options.parse((f"type.googleapis.com/{V1}", wire.enc_int(4, 7) + wire.enc_int(5, 8) + wire.enc_int(2, 1)))
    assert parsed is not None
    assert (parsed.options.io_uid, parsed.options.io_gid) == (7, 8)


def test_defaults_are_accepted_and_zero_ids_are_not_given(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="runwasm.shim.common.runc_options"):
        parsed = options.parse((V1, b""))
    assert parsed is not None
    assert parsed.given == frozenset()
    assert "NoNewKeyring=false: runwasm does not create a session keyring" in caplog.text


@pytest.mark.parametrize(("type_url", "value", "needle"), [
    (V1, wire.enc_int(1, 1), "containerd.runc.v1.Options NoPivotRoot=True: runwasm always uses pivot_root"),
    (V1, wire.enc_int(9, 1), "SystemdCgroup=True: runwasm manages cgroupfs paths"),
    (V1, wire.enc_str(3, "/shim"), "ShimCgroup='/shim'"),
    (V1, wire.enc_str(6, "crun"), "BinaryName='crun'"),
    (V1, wire.enc_str(12, "ttrpc+unix:///x"), "TaskApiAddress='ttrpc+unix:///x'"),
    (CREATE, wire.enc_int(2, 1), "OpenTcp=True: is a CRIU restore option"),
    (CREATE, wire.enc_str(6, "network"), "EmptyNamespaces='network'"),
    (RUNC, wire.enc_str(1, "/usr/bin/crun"), "Runtime='/usr/bin/crun'"),
    (RUNC, wire.enc_int(4, 1), "RuncOptions SystemdCgroup=True"),
    (V1, wire.enc_int(8, 1), "field 8 is unknown to runwasm"),
    (V1, wire.enc_str(4, "x"), "does not decode"),
    (V1, wire.enc_int(4, 1 << 33), "does not fit a uint32"),
])
def test_fields_runwasm_cannot_honour_are_refused(type_url: str, value: bytes, needle: str) -> None:
    with pytest.raises(InvalidArgumentError, match=needle.replace("(", r"\(").replace("+", r"\+")):
        options.parse((type_url, value), source="start options")


def test_meaningless_fields_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="runwasm.shim.common.runc_options"):
        options.parse((V1, wire.enc_str(7, "/run/runc") + wire.enc_str(10, "/img") + wire.enc_int(2, 1)))
    assert "Root='/run/runc' ignored (runc's state root" in caplog.text
    assert "CriuImagePath='/img' ignored" in caplog.text
    assert "NoNewKeyring" not in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_give_to_chowns_the_fifos(tmp_path: Path) -> None:
    out, err = tmp_path / "out", tmp_path / "err"
    os.mkfifo(out, 0o700)
    os.mkfifo(err, 0o700)
    give_to(StdioPaths(stdout=str(out), stderr=f"fifo://{err}"), 100000, 100001)
    assert (out.stat().st_uid, out.stat().st_gid) == (100000, 100001)
    assert (err.stat().st_uid, err.stat().st_gid) == (100000, 100001)
    give_to(StdioPaths(stdout=str(out)), None, None)  # nothing asked: nothing done
    assert out.stat().st_uid == 100000
    log = tmp_path / "log"
    log.write_text("")
    with pytest.raises(InvalidArgumentError, match="expected a FIFO"):
        give_to(StdioPaths(stdout=f"file://{log}"), 100000, 100000)
