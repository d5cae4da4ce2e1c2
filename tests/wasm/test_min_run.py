"""runwasm.wasm.min_run: which tasks wasmtime-min can run, and its command line (pure parts;
the real binary runs in tests/wasm/test_child.py and tests/shim/e2e)."""

from __future__ import annotations

import pytest

from runwasm.wasm.http_serve import ServeDir
from runwasm.wasm.min_run import min_argv, why_in_process
from runwasm.wasm.sandbox import Sandbox


def test_plain_module_takes_wasmtime_min() -> None:
    assert why_in_process(Sandbox(), False, None) is None
    assert why_in_process(Sandbox(), True, None) is None  # a command component: the full CLI
    assert why_in_process(Sandbox(max_memory=1 << 20, fuel=10, max_instances=2), False, "greet") is None


@pytest.mark.parametrize(("sandbox", "component", "returns", "no_memory", "needle"), [
    (Sandbox(executor="inprocess"), False, False, False, "WasmExecutor = 'inprocess'"),
    (Sandbox(), True, False, False, "entry point '#e' of a component"),
    (Sandbox(unknown_imports="trap"), False, False, False, "WasmUnknownImports = 'trap'"),
    (Sandbox(unknown_imports="default"), False, False, False, "WasmUnknownImports = 'default'"),
    (Sandbox(features=(("simd", True),)), False, False, False, "WasmFeatures"),
    (Sandbox(), False, True, False, "returns values"),
    (Sandbox(), False, False, True, "exports no 'memory'"),
])
def test_what_the_cli_cannot_express_runs_in_process_and_says_why(
        sandbox: Sandbox, component: bool, returns: bool, no_memory: bool, needle: str) -> None:
    reason = why_in_process(sandbox, component, "e", returns, no_memory)
    assert reason is not None
    assert needle in reason


def test_argv_maps_args_env_cwd_dirs_limits_and_export() -> None:
    argv = min_argv(9, ("/app.wasm#greet", "a b", ""), (("K", "v=1"), ("PWD", "/w")), "/w",
                    [ServeDir(5, "/"), ServeDir(6, ".")], Sandbox(max_memory=65536, fuel=7), "greet")
    assert argv[0] == "run"
    assert argv[argv.index("--allow-precompiled") - 1] != "--dir"
    assert argv[argv.index("max-memory-size=65536") - 1] == "-W"
    assert argv[argv.index("fuel=7") - 1] == "-W"
    assert argv[argv.index("--invoke") + 1] == "greet"
    assert ["--dir", "/proc/self/fd/5::/", "--dir", "/proc/self/fd/6::."] == argv[argv.index("--dir"):argv.index("--dir") + 4]
    assert ["--env", "K=v=1", "--env", "PWD=/w"] == argv[argv.index("--env"):argv.index("--env") + 4]
    assert argv[-5:] == ["--argv0", "/app.wasm#greet", "/proc/self/fd/9", "a b", ""]


def test_argv_without_export_runs_the_command() -> None:
    argv = min_argv(3, ("/hello.wasm",), (), "/", [], Sandbox(), None)
    assert "--invoke" not in argv
    assert argv[-3:] == ["--argv0", "/hello.wasm", "/proc/self/fd/3"]


def test_sandbox_executor_key() -> None:
    from runwasm.wasm.errors import SandboxError
    from runwasm.wasm.sandbox import from_toml

    assert from_toml({"WasmExecutor": "inprocess"}, "t").executor == "inprocess"
    assert Sandbox.from_json(Sandbox(executor="inprocess").to_json()).executor == "inprocess"
    with pytest.raises(SandboxError, match="WasmExecutor"):
        from_toml({"WasmExecutor": "native"}, "t")
