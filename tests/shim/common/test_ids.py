"""containerd identifier rules."""

from __future__ import annotations

import pytest

from runwasm.shim.common.errors import InvalidArgumentError
from runwasm.shim.common.ids import MAX_LENGTH, validate_id


@pytest.mark.parametrize("value", ["a", "abc", "A1", "a.b", "a_b", "a-b", "a-b.c_d", "0", "x" * MAX_LENGTH])
def test_valid(value: str) -> None:
    validate_id(value)


@pytest.mark.parametrize("value", ["-a", "a-", ".a", "a..b", "a-_b", "a b", "a/b", "ä", "a\n", "a:b", "_"])
def test_invalid(value: str) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid container id"):
        validate_id(value, "container id")


def test_empty() -> None:
    with pytest.raises(InvalidArgumentError, match="must not be empty"):
        validate_id("", "exec id")


def test_too_long() -> None:
    with pytest.raises(InvalidArgumentError, match=f"longer than {MAX_LENGTH}"):
        validate_id("x" * (MAX_LENGTH + 1))
