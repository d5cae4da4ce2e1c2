"""Harness e2e tests run each scenario in both start protocols (2.3 bootstrap and legacy)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=[False, True], ids=["bootstrap", "legacy"])
def legacy(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)
