"""``runwasm run IMAGE``: images from runwasm's store through the real shim binary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.oci.imagebuild import Layer, write_image
from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.image import Platform
from tests.conftest import built_fixture

RUNWASM = str(Path(sys.executable).parent / "runwasm")
pytestmark = pytest.mark.privileged


def _runwasm(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RUNWASM_ROOT=str(root))
    return subprocess.run([RUNWASM, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def _no_mounts_under(root: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return not any(str(root) in line for line in f)


def test_packed_wasm_image_runs_and_leaves_no_mounts(tmp_path: Path) -> None:
    root = tmp_path / "store"
    tar = tmp_path / "hello.tar"
    assert _runwasm(root, "image", "pack-wasm", str(built_fixture("wasm", "hello.wasm")), "-o", str(tar),
                    "--name", "t/hello:1").returncode == 0
    assert _runwasm(root, "image", "import", str(tar)).returncode == 0
    res = _runwasm(root, "run", "t/hello:1")
    assert (res.returncode, res.stdout) == (0, "hello from wasm\n"), res.stderr
    assert _no_mounts_under(root)


def test_wasm_artifact_layer_image_runs(tmp_path: Path) -> None:
    """A runwasi-style image: the module is an ``application/wasm`` layer, not a file in a tar."""
    root = tmp_path / "store"
    module = built_fixture("wasm", "exit7.wasm").read_bytes()
    layer = Layer(mt.WASM_MODULE, module, Digest.of_bytes(module))
    tar = tmp_path / "art.tar"
    write_image(tar, [layer], name="docker.io/t/art:1", platform=Platform(os="wasip1", architecture="wasm"),
                argv=("/app.wasm",))
    assert _runwasm(root, "image", "import", str(tar)).returncode == 0
    res = _runwasm(root, "run", "t/art:1")
    assert res.returncode == 7, res.stderr
    assert _no_mounts_under(root)


def test_unknown_image_is_a_clear_error(tmp_path: Path) -> None:
    res = _runwasm(tmp_path / "store", "run", "no/such:image")
    assert res.returncode == 125
    assert "'no/such:image'" in res.stderr
    assert "not found" in res.stderr


def test_image_rootfs_is_released_when_a_later_step_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``runwasm run --net IMAGE``: the network set-up failing after the rootfs was mounted
    must not leave the rootfs mounted."""
    from runwasm.shim.harness import cli

    root = tmp_path / "store"
    tar = tmp_path / "hello.tar"
    assert _runwasm(root, "image", "pack-wasm", str(built_fixture("wasm", "hello.wasm")), "-o", str(tar),
                    "--name", "t/hello:2").returncode == 0
    assert _runwasm(root, "image", "import", str(tar)).returncode == 0

    def no_network(bundle: Path, cid: str) -> None:
        raise OSError(1, "simulated: cannot create the network namespace")

    monkeypatch.setattr(cli, "_join_new_netns", no_network)
    monkeypatch.setenv("RUNWASM_ROOT", str(root))
    assert cli.main(["run", "--net", "t/hello:2"]) == 125
    assert _no_mounts_under(root)
