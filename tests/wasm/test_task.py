"""``cli_report``: a guest failure as the wasmtime CLI prints it (the real trap is in test_child)."""

from __future__ import annotations

import wasmtime

from runwasm.wasm.task import PreparedTask, cli_report


def _task(export: str = "_start") -> PreparedTask:
    return PreparedTask("module", wasmtime.Store(wasmtime.Engine()), export, "/app.wasm")


class _Failure(wasmtime.WasmtimeError):
    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def test_numbered_causes_continue_the_chain() -> None:
    err = _Failure("failed to call `run`\n\nCaused by:\n    0: inner one\n    1: innermost\n")
    assert cli_report(_task("run"), err) == (
        "Error: failed to run main module `/app.wasm`\n\nCaused by:\n    0: failed to invoke `run`\n"
        "    1: failed to call `run`\n    2: inner one\n    3: innermost\n")


def test_an_error_without_causes_is_one_line() -> None:
    assert cli_report(_task(), _Failure("out of fuel")) == (
        "Error: failed to run main module `/app.wasm`\n\nCaused by:\n    0: failed to invoke command default\n"
        "    1: out of fuel\n")


def test_other_errors_are_reported_as_they_are() -> None:
    assert cli_report(_task(), RuntimeError("no export")).endswith("Caused by:\n    0: no export\n")
