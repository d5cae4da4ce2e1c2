"""Shared test helpers: built fixtures and root/kernel feature checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "build"


def built_fixture(area: str, name: str) -> Path:
    """Path of a fixture built by ``make fixtures``; fails (not skips) when it is missing."""
    path = FIXTURES / area / name
    if not path.exists():
        pytest.fail(f"fixture {path} is missing: run `make fixtures`")
    return path


@pytest.fixture
def wasm_fixture() -> object:
    return lambda name: built_fixture("wasm", name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (real namespaces, mounts, cgroups)")
    for item in items:
        if "privileged" in item.keywords or "integration" in item.keywords:
            item.add_marker(skip)
