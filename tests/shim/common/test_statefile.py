"""``runwasm.json`` (shim/common/statefile.py): what ``delete`` reads back after a dead server."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from runwasm.shim.common.statefile import FILENAME, BundleState


def test_every_field_is_saved_and_read_back(tmp_path: Path) -> None:
    """``save`` spells the fields out (no ``asdict``): a field added later must be saved too."""
    state = BundleState(id="c1", kind="wasm", pid=42, pid_start_time=12345, exit_status=7,
                        mounts=["/b/rootfs"], cgroup="/runwasm/ns/c1", verity=["rwv-1"])
    state.save(tmp_path)
    doc = json.loads((tmp_path / FILENAME).read_text())
    assert set(doc) == {f.name for f in dataclasses.fields(BundleState)}
    assert BundleState.load(tmp_path) == state


def test_a_shorter_record_overwrites_a_longer_one(tmp_path: Path) -> None:
    BundleState(id="c1", mounts=["/a/very/long/mount/point"] * 4).save(tmp_path)
    BundleState(id="c1", exit_status=0).save(tmp_path)
    assert BundleState.load(tmp_path) == BundleState(id="c1", exit_status=0)
