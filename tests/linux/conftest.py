"""Per-test isolation for the Linux executor tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.linux.harness import drop_subreaper


@pytest.fixture(autouse=True)
def _no_subreaper_leak() -> Iterator[None]:
    yield
    drop_subreaper()
