"""runwasm.wasm.cli_run: the ``wasmtime run`` command line of a command component with
``WasmNetwork = true`` (the flags shared with ``wasmtime serve``, sockets, arguments, refusals)."""

from __future__ import annotations

import pytest

from runwasm.wasm import cli_run
from runwasm.wasm import http_serve as hs
from runwasm.wasm.errors import SandboxError
from runwasm.wasm.sandbox import Preopen, Sandbox

NET = ["-S", "inherit-network=y", "-S", "tcp=y", "-S", "udp=y", "-S", "allow-ip-name-lookup=y"]


def test_argv_maps_the_sandbox_like_serve_plus_sockets_and_arguments() -> None:
    sandbox = Sandbox(preopens=(Preopen("/srv", "/data"),), network=True, features=(("gc", True),), fuel=5000)
    argv = cli_run.run_argv(7, ("/bin/client.wasm", "8080", "--verbose"), (("A", "1"),), "/work",
                            [hs.ServeDir(5, "/"), hs.ServeDir(6, "/data")], sandbox, "/bin/client.wasm",
                            precompiled=True)
    assert argv == [
        "run", "-S", "cli=y", "-C", "cache=n", "-W", "gc=y", "-W", "fuel=5000", *NET, "--allow-precompiled",
        "-S", "cwd=/work", "--dir", "/proc/self/fd/5::/", "--dir", "/proc/self/fd/6::/data", "--env", "A=1",
        "--argv0", "/bin/client.wasm", "/proc/self/fd/7", "8080", "--verbose",
    ]


def test_unknown_imports_trap_is_mapped_default_refused() -> None:
    argv = cli_run.run_argv(3, ("/a.wasm",), (), "/", [], Sandbox(network=True, unknown_imports="trap"), "/a.wasm")
    assert argv[-5:] == ["-W", "unknown-imports-trap=y", "--argv0", "/a.wasm", "/proc/self/fd/3"]
    with pytest.raises(SandboxError, match="WasmUnknownImports = 'default' is for core modules only"):
        cli_run.run_argv(3, ("/a.wasm",), (), "/", [], Sandbox(network=True, unknown_imports="default"), "/a.wasm")


def test_serve_gets_the_socket_flags_only_with_network() -> None:
    assert not set(NET[1::2]) & set(hs.serve_argv(3, ("/a.wasm",), (), "/", [], Sandbox(), "/a.wasm"))
    argv = hs.serve_argv(3, ("/a.wasm",), (), "/", [], Sandbox(network=True), "/a.wasm")
    assert argv == ["serve", "--addr", "0.0.0.0:8080", "-S", "cli=y", "-C", "cache=n", *NET, "/proc/self/fd/3"]
