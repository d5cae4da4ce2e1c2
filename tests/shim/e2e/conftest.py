"""Harness e2e tests run each scenario in both start protocols (2.3 bootstrap and legacy)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=[False, True], ids=["bootstrap", "legacy"])
def legacy(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here runs the real shim binary, which needs root (state under /run, cgroups)."""
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.privileged)
