"""Shared test helpers: built fixtures and root/kernel feature checks."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
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


@pytest.fixture(autouse=True, scope="session")
def private_template() -> Iterator[Path]:
    """The shims this session runs use a warm template of their own (shim/template/), never the
    node's, and it is stopped at the end."""
    from runwasm.shim.template import key, process

    d = Path(tempfile.mkdtemp(prefix="rwt-", dir="/run" if os.geteuid() == 0 else None))
    old = os.environ.get(key.ENV_DIR)
    os.environ[key.ENV_DIR] = str(d)
    try:
        yield d
    finally:
        process.stop_templates(str(d))
        if old is None:
            os.environ.pop(key.ENV_DIR, None)
        else:
            os.environ[key.ENV_DIR] = old
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def wasm_fixture() -> object:
    return lambda name: built_fixture("wasm", name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "critest" not in (config.getoption("markexpr") or ""):
        # the critest tier runs cri-tools' whole suite twice: only when asked for by name
        slow = pytest.mark.skip(reason="critest tier (~15 min): run `pytest -m critest` or `make critest`")
        for item in items:
            if item.get_closest_marker("critest") is not None:
                item.add_marker(slow)
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (real namespaces, mounts, cgroups)")
    for item in items:
        if "privileged" in item.keywords or "integration" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tree() -> Iterator[Path]:
    """A host directory with a tmpfs submount at ``sub`` (unmounted afterwards): what the
    recursive mount options (``rro``...) are tested on."""
    from runwasm.linux import syscalls as sc

    top = Path(tempfile.mkdtemp(prefix="rwmounts-"))
    top.chmod(0o755)
    (top / "sub").mkdir()
    sc.mount("tmpfs", str(top / "sub"), "tmpfs", 0, "size=64k")
    try:
        yield top
    finally:
        sc.umount2(str(top / "sub"), sc.MNT_DETACH)
        shutil.rmtree(top, ignore_errors=True)
