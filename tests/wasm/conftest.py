"""Fixtures for the Wasm tests: compiled WAT fixtures and a rootfs per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fixtures.wasm.build import build

FIXTURE_SRC = Path(__file__).resolve().parents[2] / "fixtures" / "wasm"


@pytest.fixture(scope="session")
def wasm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with every fixture compiled to ``<name>.wasm``."""
    out = tmp_path_factory.mktemp("wasm-fixtures")
    build(out)
    return out


@pytest.fixture
def rootfs(tmp_path: Path, wasm_dir: Path) -> Path:
    """A container rootfs holding every fixture at ``/<name>.wasm`` plus ``/hello.wat``."""
    root = tmp_path / "rootfs"
    root.mkdir()
    for f in wasm_dir.glob("*.wasm"):
        shutil.copy(f, root / f.name)
    shutil.copy(FIXTURE_SRC / "hello.wat", root / "hello.wat")
    return root


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    return d
