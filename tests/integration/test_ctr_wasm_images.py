"""Wasm OCI images whose module is a layer (runwasi flavour, CNCF artifact) under real containerd.

containerd 2.3.4: ``ctr run`` of a runwasi-flavour image reaches the shim with an empty rootfs;
the shim reads the Wasm layer from containerd's content store over gRPC
(``shim/server/image_module.py``) and runs it, whatever path ``args[0]`` names. Debian's 1.6.20 refuses
such images before the shim is involved; those tests pin down exactly what it says.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import built_fixture
from tests.integration.daemon import Containerd
from tests.integration.images import pack_wasm_image

pytestmark = pytest.mark.integration


_IMPORTED: dict[tuple[str, str], str] = {}


def _import(daemon: Containerd, tmp: Path, module: str, fmt: str) -> str:
    """Pack and import once per daemon; returns the normalised ref."""
    key = (daemon.address, f"{module}-{fmt}")
    if key not in _IMPORTED:
        tar = tmp / f"{module}-{fmt}.tar"
        ref = pack_wasm_image(built_fixture("wasm", f"{module}.wasm"), tar, f"runwasm.test/{module}-{fmt}:1", fmt)
        daemon.ctr("images", "import", "--all-platforms", str(tar))
        _IMPORTED[key] = ref
    return _IMPORTED[key]


@pytest.fixture
def containerd2(containerd: Containerd) -> Containerd:
    """The 2.3.4 daemon of the parametrized ``containerd`` fixture (1.6.20 cannot unpack these images)."""
    if containerd.flavour != "2.3":
        pytest.skip("containerd 1.6.20 cannot unpack images with Wasm layers (see the cd16 refusal test)")
    return containerd


@pytest.fixture
def runwasi_images(containerd2: Containerd, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("runwasi-images")
    names = ("hello", "exit7", "argsenv", "component_run_ok", "component_run_err")
    return {name: _import(containerd2, tmp, name, "runwasi") for name in names}


def test_runwasi_module_layer_runs_from_the_content_store(containerd2: Containerd,
                                                          runwasi_images: dict[str, str]) -> None:
    res = containerd2.run(runwasi_images["hello"], "rw-hello")
    assert (res.returncode, res.stdout) == (0, "hello from wasm\n"), res.output
    assert "module from runwasi layer sha256:" in containerd2.log_tail(200)


def test_runwasi_exit_status(containerd2: Containerd, runwasi_images: dict[str, str]) -> None:
    res = containerd2.run(runwasi_images["exit7"], "rw-exit7")
    assert res.returncode == 7, res.output


@pytest.mark.parametrize("arg0", ["wasi-demo.wasm", "/not/in/the/rootfs.wasm", ""])
def test_the_layer_runs_whatever_args0_names(containerd2: Containerd, runwasi_images: dict[str, str],
                                             arg0: str) -> None:
    """The guest's argv is process.args unchanged; the module is the layer, not args[0]'s path."""
    cid = "rw-args-" + (re.sub(r"[^a-z0-9]", "", arg0) or "empty")
    res = containerd2.run(runwasi_images["argsenv"], cid, arg0, "foo", extra=("--env", "K=v"))
    assert res.returncode == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[:2] == [f"arg: {arg0}", "arg: foo"]
    assert "env: K=v" in lines


@pytest.mark.parametrize(("module", "status"), [("component_run_ok", 0), ("component_run_err", 1)])
def test_runwasi_component_layer(containerd2: Containerd, runwasi_images: dict[str, str], module: str,
                                 status: int) -> None:
    res = containerd2.run(runwasi_images[module], f"rw-{module.replace('_', '-')}")
    assert res.returncode == status, res.output


def test_missing_module_without_wasm_layer_still_names_args0(containerd2: Containerd,
                                                            tmp_path: Path) -> None:
    """A tar-flavour image has no Wasm layer: the lookup finds none and the error names args[0]."""
    ref = _import(containerd2, tmp_path, "hello", "tar")
    res = containerd2.run(ref, "rw-missing", "/nope.wasm")
    assert res.returncode != 0
    assert "'/nope.wasm'" in res.output, res.output


def test_containerd_2_client_refuses_the_cncf_artifact(containerd2: Containerd, tmp_path: Path) -> None:
    """ctr itself stops at the artifact's config type, before any shim runs (CRI is its way in)."""
    ref = _import(containerd2, tmp_path, "hello", "artifact")
    res = containerd2.run(ref, "rw-artifact")
    assert res.returncode != 0
    assert "unknown image config media type application/vnd.wasm.config.v0+json" in res.output


@pytest.mark.parametrize("fmt", ["runwasi", "artifact"])
def test_containerd_1_6_cannot_unpack_layer_flavours(containerd: Containerd, tmp_path: Path, fmt: str) -> None:
    """Debian's 1.6.20 unpacks on import and on ``ctr run`` and counts the Wasm layer as a
    filesystem layer: both fail; only the ``tar`` flavour runs there."""
    if containerd.flavour != "1.6":
        pytest.skip("this pins down containerd 1.6.20's refusal; 2.3.4 runs these images")
    tar = tmp_path / f"{fmt}.tar"
    ref = pack_wasm_image(built_fixture("wasm", "hello.wasm"), tar, f"runwasm.test/hello16-{fmt}:1", fmt)
    imp = containerd.ctr("images", "import", "--all-platforms", str(tar), check=False)
    assert "mismatched image rootfs and manifest layers" in imp.output
    res = containerd.run(ref, f"c16-{fmt}")
    assert res.returncode != 0
    assert "mismatched image rootfs and manifest layers" in res.output


def _maps_have_grpc(pid: int) -> bool:
    return "cygrpc" in Path(f"/proc/{pid}/maps").read_text()


def test_grpc_is_loaded_only_when_the_module_is_a_layer(containerd2: Containerd, tmp_path: Path) -> None:
    """A container whose module is in its rootfs never makes the shim server import grpc; one
    whose module is a layer does (the lookup is lazy). Both pods are hosted by one node server
    (shim/server/node.py), found as their workloads' parent: the order matters."""
    from tests.integration.daemon import wait_status

    for fmt, cid, want in (("tar", "grpc-tar", False), ("runwasi", "grpc-layer", True)):
        ref = _import(containerd2, tmp_path, "sleep", fmt)
        res = containerd2.run(ref, cid, rm=False, detach=True)
        assert res.returncode == 0, res.output
        pid, _ = wait_status(containerd2, cid, "RUNNING", timeout=60)
        server = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert b"_runwasm_serve" in Path(f"/proc/{server}/cmdline").read_bytes(), server
        assert _maps_have_grpc(server) is want, (fmt, server)
