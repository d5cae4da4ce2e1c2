"""The README's Kubernetes/containerd snippets are the files in ``docs/examples/`` that the CRI
tier loads (``tests/integration/cri``), and they agree with each other."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.cri.conftest import BUSYBOX_REF, WASM_REF

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
RUNTIME_TYPE = "io.containerd.runwasm.v1"


def _runtimes(doc: dict[str, Any]) -> dict[str, Any]:
    plugins = doc["plugins"]
    if "io.containerd.cri.v1.runtime" in plugins:  # containerd 2.x
        table: dict[str, Any] = plugins["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]
    else:  # containerd 1.6/1.7
        table = plugins["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    return table


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.iterdir()))
def test_readme_shows_each_example_verbatim(name: str) -> None:
    readme = (ROOT / "README.md").read_text()
    assert (EXAMPLES / name).read_text() in readme, f"README.md does not show docs/examples/{name} verbatim"


def test_runtimeclass_handler_names_the_configured_runtime() -> None:
    rc = yaml.safe_load((EXAMPLES / "runtimeclass.yaml").read_text())
    assert rc["kind"] == "RuntimeClass"
    for cfg in ("containerd-1.x-config.toml", "containerd-2.x-config.toml"):
        runtimes = _runtimes(tomllib.loads((EXAMPLES / cfg).read_text()))
        assert runtimes[rc["handler"]]["runtime_type"] == RUNTIME_TYPE, cfg


def test_pod_uses_the_runtimeclass_and_the_images_the_cri_tier_runs() -> None:
    rc = yaml.safe_load((EXAMPLES / "runtimeclass.yaml").read_text())
    pod = yaml.safe_load((EXAMPLES / "pod.yaml").read_text())
    assert pod["spec"]["runtimeClassName"] == rc["metadata"]["name"]
    assert [c["image"] for c in pod["spec"]["containers"]] == [WASM_REF, BUSYBOX_REF]


def test_sandbox_api_example_is_the_handler_the_cri_tier_runs() -> None:
    from tests.integration.cri.crid import SANDBOX_API_HANDLER

    runtimes = _runtimes(tomllib.loads((EXAMPLES / "containerd-2.x-sandbox-api.toml").read_text()))
    entry = runtimes[SANDBOX_API_HANDLER]
    assert (entry["runtime_type"], entry["sandboxer"]) == (RUNTIME_TYPE, "shim")
    # the same runtime options as the podsandbox entry: only the sandboxer differs
    plain = _runtimes(tomllib.loads((EXAMPLES / "containerd-2.x-config.toml").read_text()))["runwasm"]
    assert entry["options"] == plain["options"]


def test_1x_options_file_holds_the_2x_options_table() -> None:
    """containerd 1.6 passes only ConfigPath of a non-runc runtime's options table on, so the 1.x
    snippet names a file; that file holds the same options as the 2.x snippet's table."""
    one = _runtimes(tomllib.loads((EXAMPLES / "containerd-1.x-config.toml").read_text()))["runwasm"]["options"]
    two = _runtimes(tomllib.loads((EXAMPLES / "containerd-2.x-config.toml").read_text()))["runwasm"]["options"]
    assert set(one) == {"ConfigPath"}, one
    assert tomllib.loads((EXAMPLES / "runwasm-options.toml").read_text()) == two
