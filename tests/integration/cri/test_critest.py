"""cri-tools' ``critest`` v1.36 on handler ``runwasm`` and handler ``runc`` of one private
containerd 2.3.4 (``critest.py``, what ``make critest`` prints): runwasm fails no spec that runc
passes. About a quarter of an hour: deselected unless asked for (``pytest -m critest``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cri.critest import (
    CRITEST_MISSING,
    critest_binary,
    critest_daemon,
    regressions,
    run_critest,
)
from tests.integration.daemon import CONTAINERD23_MISSING, containerd23_bin

pytestmark = [pytest.mark.integration, pytest.mark.critest]


def test_runwasm_fails_no_critest_spec_that_runc_passes(tmp_path: Path) -> None:
    if critest_binary() is None:
        pytest.skip(CRITEST_MISSING)
    if containerd23_bin() is None:
        pytest.skip(CONTAINERD23_MISSING)
    with critest_daemon("2.3", tmp_path) as daemon:
        ours = run_critest(daemon, "runwasm", tmp_path / "out")
        theirs = run_critest(daemon, "runc", tmp_path / "out")
    assert len(theirs.passed) > 50, f"critest hardly ran on runc: {theirs.counts} (see {tmp_path / 'out'})"
    assert regressions(ours, theirs) == [], (f"runwasm {ours.counts}, runc {theirs.counts}; logs in "
                                             f"{tmp_path / 'out'}")
    assert daemon.killed_leftovers == [], f"shim processes had to be killed: {daemon.killed_leftovers}"
    assert daemon.leftovers() == []
