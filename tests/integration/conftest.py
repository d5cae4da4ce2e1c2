"""Fixtures for integration tests: one private containerd daemon per flavour per session.

``containerd`` is parametrized over Debian's 1.6 (``cd16``) and the prebuilt 2.3.4 (``cd23``,
the bootstrap start protocol; skipped with the reason when its binaries are absent), so every
integration test runs against both.

The daemon (``tests.integration.daemon.Containerd``) has its own root, state, sockets and
opt path under a short /tmp dir and resolves ``io.containerd.runwasm.v1`` to the venv's shim.
Every test runs against it in the daemon's own namespace; ``_clean_containers`` removes every
task and container after each test, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import built_fixture
from tests.integration.daemon import CONTAINERD23_MISSING, Containerd, containerd23_bin, containerd_binary
from tests.integration.images import pack_wasm_image

WASM_MODULES = ("hello", "exit7", "exit_arg", "argsenv", "spin", "sleep", "http_hello")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", params=["1.6", "2.3"], ids=["cd16", "cd23"])
def containerd(request: pytest.FixtureRequest) -> Iterator[Containerd]:
    flavour: str = request.param
    if flavour == "1.6" and containerd_binary() is None:
        pytest.skip("containerd binary not found on PATH (install Debian's containerd: scripts/install-system.sh)")
    if flavour == "2.3" and containerd23_bin() is None:
        pytest.skip(CONTAINERD23_MISSING)
    with Containerd(flavour=flavour) as daemon:
        yield daemon
    # cleanup is part of the contract: shims must have exited on their own (Shutdown after the
    # last container), and nothing of ours may remain in the global paths
    assert daemon.killed_leftovers == [], f"shim processes had to be killed: {daemon.killed_leftovers}"
    assert daemon.leftovers() == []


@pytest.fixture(scope="session")
def wasm_images(containerd: Containerd, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Fixture modules packed with ``runwasm image pack-wasm`` and imported: {module stem: ref}."""
    out = tmp_path_factory.mktemp("images")
    refs: dict[str, str] = {}
    for name in WASM_MODULES:
        tar = out / f"{name}.tar"
        ref = pack_wasm_image(built_fixture("wasm", f"{name}.wasm"), tar, f"runwasm.test/{name}:1")
        containerd.ctr("images", "import", "--all-platforms", str(tar))
        refs[name] = ref
    return refs


@pytest.fixture(autouse=True)
def _clean_containers(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "containerd" in request.fixturenames:
        daemon: Containerd = request.getfixturevalue("containerd")
        daemon.remove_all_containers()
