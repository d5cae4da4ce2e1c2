"""Set up and run one Wasm task inside its dedicated workload process (wasmtime side).

``prepare`` does everything that can fail because of the image or the spec, before ``ready``:
resolve ``args[0]`` in the rootfs, classify, compile/load through the cache, build the WASI
context, link. It raises ``WasmError`` subclasses only. No guest code runs in ``prepare``:
core modules are linked into an ``InstancePre`` (link errors surface here) and instantiated in
``run``, because instantiation runs a module's ``start`` function.

Most tasks never reach ``run``: ``prepare`` returns a plan to exec the wasmtime CLI after
``start`` (``PreparedTask.serve``: ``wasmtime-min run`` for core modules, ``wasmtime run`` for
command components, ``serve`` for wasi:http; ``runwasm.wasm.min_run`` says which tasks take it and
logs why the others run in process), after the same checks, so set-up errors are the same.

``run`` instantiates and calls the entry export and returns the process exit status (a core
module called through a named ``#export`` that also exports ``_initialize``, a WASI reactor such
as CRuby's ``ruby.wasm``, gets ``_initialize`` called first, as the WASI application ABI asks):
- normal return: 0;
- ``proc_exit(n)``: ``n & 0xff``, i.e. exactly n for 0..255 (what a native process gets).
  wasmtime-py turns n >= 126 into a plain WasmtimeError that loses the code, so
  ``wasi_snapshot_preview1.proc_exit`` is shadowed by a host function that raises
  ``GuestExit(n)``; wasmtime-py re-raises a host function's Python exception after unwinding
  the guest, so nothing is left half-written (WASI stdout writes are flushed per call).
- a component: ``wasi:cli/run`` returning ok -> 0, err -> 1; ``wasi:cli/exit`` -> its code
  (0/1, preview 2 carries only ok/err);
- a trap or any other runtime failure: logged with the trap message and code, ``EXIT_TRAP``;
  ``run(task, report_fd=2)`` also writes the failure to the task's stderr the way the wasmtime
  CLI does (``Error: failed to run main module ...``, the cause chain, the wasm backtrace), so
  ``ctr run``, ``kubectl logs`` and ``runwasm run`` show it.

cwd: WASI preview 1 has no working directory. wasi-libc starts with cwd ``/`` and does not read
``PWD``, so relative paths resolve against the rootfs root for wasi-libc programs. What runwasm
does when ``cwd != "/"``: sets ``PWD=<cwd>`` in the guest env unless the spec sets PWD (runtimes
that honour it, and wasi-libc programs that ``chdir(getenv("PWD"))``, get the spec's cwd), and
preopens the cwd directory as ``.`` after ``/`` (older libcs resolve relative paths against a
``.`` preopen; current wasi-libc prefers the longest matching prefix, ``/``, so it is harmless).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import wasmtime
import wasmtime.component as wc

from runwasm.oci import steps
from runwasm.wasm import verdict
from runwasm.wasm.cache import CompileCache, cache_dir_from
from runwasm.wasm.cli_run import prepare_run
from runwasm.wasm.confine import Confinement, NoConfinement
from runwasm.wasm.detect import SNIFF_BYTES, classify_bytes, parse_entrypoint
from runwasm.wasm.engine import engine_fingerprint, make_engine
from runwasm.wasm.errors import (
    ExportNotFoundError,
    InvalidModuleError,
    LinkError,
    SandboxError,
    WasiSetupError,
    WasmError,
)
from runwasm.wasm.fast_min import module_key
from runwasm.wasm.http_serve import DirHandle, ServePlan, prepare_serve, proxy_export
from runwasm.wasm.min_run import prepare_min, why_in_process
from runwasm.wasm.payload import WasmTaskPayload
from runwasm.wasm.preopen import Preopen, close_preopens, guest_env, open_preopens
from runwasm.wasm.resolve import open_module_fd, read_module, resolve_module_path
from runwasm.wasm.sandbox import Sandbox

log = logging.getLogger(__name__)

EXIT_TRAP = 134
"""Exit status after a trap: 128+SIGABRT, what a native program that aborts reports. runwasi
uses 137, which is indistinguishable from SIGKILL and the OOM killer."""

WASI_P1 = "wasi_snapshot_preview1"
CLI_RUN_PREFIX = "wasi:cli/run@"


class GuestExit(BaseException):  # noqa: N818 - not an error: the guest asked to exit
    """Raised by the shadowed ``proc_exit`` host function; ``code`` is the raw u32 status."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(slots=True)
class PreparedTask:
    """A task ready to run: everything linked, no guest code executed yet."""

    flavour: Literal["module", "component", "http", "cli"]
    store: wasmtime.Store
    export: str
    module_path: str
    pre: wasmtime.InstancePre | None = None
    component: wc.Component | None = None
    component_linker: wc.Linker | None = None
    cli_run: str | None = None  # the exact wasi:cli/run@x.y.z export name, for commands
    initialize: bool = False  # a reactor: call its ``_initialize`` before the named export
    cache_source: str = ""
    serve: ServePlan | None = None  # flavours "http"/"cli": exec ``wasmtime serve``/``run``/``wasmtime-min run``


def build_wasi(p: WasmTaskPayload, sandbox: Sandbox | None = None,
               preopens: list[Preopen] | None = None) -> wasmtime.WasiConfig:
    """WASI context: argv, env, stdio inherited from fds 0/1/2, preopens (see module doc).

    The preopened directories are opened by wasmtime through ``/proc/self/fd/<fd>`` of the
    handles (``open_preopens``), before ``Confinement.drop`` (like runc's mounts: made with the
    runtime's credentials); what the guest then does through them is checked against the
    container's.
    """
    cfg = wasmtime.WasiConfig()
    try:
        cfg.argv = list(p.args)
        cfg.env = guest_env(p)
    except wasmtime.WasmtimeError as err:
        raise WasiSetupError(f"failed to set up WASI argv/env: {err}") from err
    cfg.inherit_stdin()
    cfg.inherit_stdout()
    cfg.inherit_stderr()
    own = preopens is None
    handles = open_preopens(p, sandbox) if preopens is None else preopens
    try:
        for pre in handles:
            try:
                cfg.preopen_dir(f"/proc/self/fd/{pre.fd}", pre.guest, pre.mutable)
            except wasmtime.WasmtimeError as err:
                raise WasiSetupError(f"failed to preopen {pre.host!r} as {pre.guest!r}: {err}") from err
    finally:
        if own:
            close_preopens(handles)
    return cfg


def _check_module_export(module: wasmtime.Module, name: str, where: str) -> None:
    for exp in module.exports:
        if exp.name == name:
            ty = exp.type
            if not isinstance(ty, wasmtime.FuncType) or ty.params:
                raise ExportNotFoundError(
                    f"failed to find entry point in {where!r}: export {name!r} must be a function "
                    f"without parameters, got {ty}"
                )
            return
    funcs = sorted(e.name for e in module.exports if isinstance(e.type, wasmtime.FuncType))
    raise ExportNotFoundError(
        f"failed to find entry point in {where!r}: expected an exported function {name!r}, "
        f"the module exports functions {funcs!r}"
    )


def _prepare_module(engine: wasmtime.Engine, module: wasmtime.Module, export: str | None, where: str,
                    unknown_imports: str = "error", store: wasmtime.Store | None = None) -> wasmtime.InstancePre:
    name = export or "_start"
    _check_module_export(module, name, where)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    linker.allow_shadowing = True

    def proc_exit(code: int) -> None:
        raise GuestExit(code)

    linker.define_func(WASI_P1, "proc_exit", wasmtime.FuncType([wasmtime.ValType.i32()], []), proc_exit)
    try:
        if unknown_imports == "trap":  # sandbox WasmUnknownImports: like wasmtime run -W unknown-imports-trap=y
            linker.define_unknown_imports_as_traps(module)
        elif unknown_imports == "default":
            linker.define_unknown_imports_as_default_values(store or wasmtime.Store(engine), module)
        return linker.instantiate_pre(module)
    except wasmtime.WasmtimeError as err:
        wanted = sorted(f"{i.module}::{i.name}" for i in module.imports if i.module != WASI_P1)
        raise LinkError(
            f"failed to link {where!r}: {err} (only {WASI_P1} is provided; non-WASI imports: {wanted!r})"
        ) from err


def _prepare_component(engine: wasmtime.Engine, comp: wc.Component, export: str | None, where: str,
                       unknown_imports: str = "error") -> tuple[wc.Linker, str | None]:
    exports = comp.type.exports(engine)
    cli_run: str | None = None
    if export is None:
        runs = sorted(n for n in exports if n.startswith(CLI_RUN_PREFIX))
        if not runs:
            raise ExportNotFoundError(
                f"failed to find entry point in component {where!r}: expected an export "
                f"'{CLI_RUN_PREFIX}0.2.x' (a WASI command), got exports {sorted(exports)!r}"
            )
        cli_run = runs[-1]
    else:
        item = exports.get(export)
        if item is None or not isinstance(item.ty, wc.FuncType) or item.ty.params:
            raise ExportNotFoundError(
                f"failed to find entry point in component {where!r}: expected a function export "
                f"{export!r} without parameters, got exports {sorted(exports)!r}"
            )
    if unknown_imports == "default":
        raise LinkError(f"failed to link component {where!r}: WasmUnknownImports = 'default' is for core modules "
                        "(wasmtime-py 50's component Linker can only define unknown imports as traps)")
    foreign = sorted(n for n in comp.type.imports(engine) if not n.startswith("wasi:"))
    if foreign and unknown_imports != "trap":
        raise LinkError(f"failed to link component {where!r}: only WASI 0.2 imports are provided, it also imports {foreign!r}")
    linker = wc.Linker(engine)
    linker.add_wasip2()
    if unknown_imports == "trap":
        try:
            linker.define_unknown_imports_as_traps(comp)
        except wasmtime.WasmtimeError as err:
            raise LinkError(f"failed to link component {where!r}: {err}") from err
    return linker, cli_run


def _check_network_route(artifact: object, export: str | None, where: str) -> None:
    """``WasmNetwork = true`` runs through ``wasmtime run`` (``runwasm.wasm.cli_run``): refuse
    what that route cannot run with sockets."""
    if isinstance(artifact, wasmtime.Module):
        raise SandboxError(f"WasmNetwork = true cannot be honoured for {where!r}: it is a WASI preview 1 core "
                           "module, and preview 1 has no socket calls (wasi:sockets is WASI 0.2: build the "
                           "program as a component, e.g. for wasm32-wasip2); set WasmNetwork = false")
    if export is not None:
        raise SandboxError(f"WasmNetwork = true cannot be honoured for {where!r}: entry point '#{export}' names an "
                           "export, and the networked route (wasmtime run) runs a command's wasi:cli/run only")


def _read_module_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise InvalidModuleError(f"failed to read module {path!r}: {err.strerror}") from err


def prepare(p: WasmTaskPayload, confinement: Confinement | None = None) -> PreparedTask:
    """Everything before ``ready`` (see module doc), with ``confinement`` called at the points
    ``runwasm.wasm.confine`` lists. Raises ``WasmError`` subclasses, or the confinement's errors."""
    conf = confinement if confinement is not None else NoConfinement()
    conf.check()
    path, export = parse_entrypoint(p.args[0])
    sandbox = Sandbox.from_json(p.sandbox) if p.sandbox else Sandbox()
    host = None if p.module_file is not None else resolve_module_path(p.rootfs, path, p.env, p.cwd)
    preopens = open_preopens(p, sandbox)
    try:
        with steps.step("wasm.resolve", **{"runwasm.wasm.module": p.args[0]}) as attrs:
            if host is None:  # the image's Wasm layer, written by the shim (outside the rootfs)
                where = p.module_name or p.module_file or ""
                data = _read_module_file(p.module_file or "")
                attrs["runwasm.wasm.module.path"] = p.module_file or ""
            else:
                where = f"{path} (host {host})"
                with conf.as_guest():  # the container's user must be able to read the module
                    fd = open_module_fd(p.rootfs, host, preopens[0].fd)
                data = read_module(p.rootfs, host, fd)
                attrs["runwasm.wasm.module.path"] = host
            attrs["runwasm.wasm.module.size"] = len(data)
        kind = classify_bytes(data[:SNIFF_BYTES])
        if kind is None:
            raise InvalidModuleError(
                f"failed to load module {where!r}: expected a wasm binary (\\0asm magic) or WAT text "
                f"starting with '(module' or '(component', got {data[:16]!r} ({len(data)} bytes)"
            )
        engine = make_engine(sandbox)
        with steps.step("wasm.compile", **{"runwasm.wasm.kind": kind}) as attrs:
            try:
                cache = CompileCache(engine, p.cache_dir, fingerprint=engine_fingerprint(sandbox))
                pre = cache.load_precompiled(p.precompiled_file, data, kind) if p.precompiled_file else None
                loaded = pre if pre is not None else cache.load(data, kind)
            except InvalidModuleError as err:
                raise InvalidModuleError(f"failed to load module {where!r}: {err}") from err
            attrs["runwasm.wasm.cache.source"] = loaded.source
            if loaded.source != "uncached":
                # nothing compiled: the on-disk cache's entry, or the content store's artifact
                attrs[steps.CACHE_HIT_ATTR] = loaded.source in ("hit", "precompiled")
        log.debug("loaded %s %r (%s)", loaded.flavour, where, loaded.source)
        if sandbox.network:
            _check_network_route(loaded.artifact, export, where)
        if isinstance(loaded.artifact, wc.Component) and export is None:
            exports = loaded.artifact.type.exports(engine)
            served = proxy_export(exports) and not any(n.startswith(CLI_RUN_PREFIX) for n in exports)
            if served or sandbox.network:
                missing = conf.unmet_exec()
                if missing:
                    raise SandboxError(f"linux.seccomp would break the wasmtime CLI that runs {where!r}: the filter is "
                                       f"loaded before its exec and it needs {', '.join(missing)}; allow them in the profile")
                prep = prepare_serve if served else prepare_run
                plan = prep(data, p.args, tuple(guest_env(p)), p.cwd,
                            [DirHandle(x.host, x.guest, x.mutable, x.fd) for x in preopens], sandbox,
                            where, cache_dir_from(p.cache_dir), conf)
                conf.enter_network()
                conf.drop()
                return PreparedTask("http" if served else "cli", wasmtime.Store(engine), "", path or where, serve=plan,
                                    cache_source=loaded.source)
        if isinstance(loaded.artifact, wasmtime.Module):
            min_plan = _plan_min(p, engine, loaded.artifact, data, export, where, sandbox, preopens, conf)
            if min_plan is not None:
                conf.drop()
                return PreparedTask("cli", wasmtime.Store(engine), export or "_start", path or where, serve=min_plan,
                                    cache_source=loaded.source)
        else:
            cli_plan = _plan_component(p, engine, loaded.artifact, data, export, where, sandbox, preopens, conf)
            if cli_plan is not None:
                conf.drop()
                return PreparedTask("cli", wasmtime.Store(engine), "", path or where, serve=cli_plan,
                                    cache_source=loaded.source)
        store = wasmtime.Store(engine)
        if (sandbox.max_memory, sandbox.max_table_elements, sandbox.max_instances) != (None, None, None):
            store.set_limits(memory_size=sandbox.max_memory or -1, table_elements=sandbox.max_table_elements or -1,
                             instances=sandbox.max_instances or -1)
        if sandbox.fuel is not None:
            store.set_fuel(sandbox.fuel)
        store.set_wasi(build_wasi(p, sandbox, preopens))
        conf.drop()
    finally:
        close_preopens(preopens)
    task = PreparedTask(loaded.flavour, store, export or "", path or where, cache_source=loaded.source)
    with steps.step("wasm.link"):
        if isinstance(loaded.artifact, wasmtime.Module):
            task.pre = _prepare_module(engine, loaded.artifact, export, where, sandbox.unknown_imports, store)
            task.export = export or "_start"
            task.initialize = task.export != "_start" and any(
                e.name == "_initialize" and isinstance(e.type, wasmtime.FuncType) and not e.type.params
                for e in loaded.artifact.exports)
        else:
            task.component = loaded.artifact
            task.component_linker, task.cli_run = _prepare_component(engine, loaded.artifact, export, where,
                                                                     sandbox.unknown_imports)
    return task


def _returns_values(module: wasmtime.Module, name: str) -> bool:
    return any(e.name == name and isinstance(e.type, wasmtime.FuncType) and bool(e.type.results)
               for e in module.exports)


def _wasi_without_memory(module: wasmtime.Module) -> bool:
    return any(i.module == WASI_P1 for i in module.imports) and not any(
        e.name == "memory" and isinstance(e.type, wasmtime.MemoryType) for e in module.exports)


def _plan_min(p: WasmTaskPayload, engine: wasmtime.Engine, module: wasmtime.Module, data: bytes, export: str | None,
              where: str, sandbox: Sandbox, preopens: list[Preopen], conf: Confinement) -> ServePlan | None:
    """The ``wasmtime-min run`` plan of a core module (``runwasm.wasm.min_run``), or None (logged
    with the reason) when the task runs in process. Export and link errors are raised here, as
    for the in-process route, before any artifact is made."""
    reason = why_in_process(sandbox, False, export, _returns_values(module, export or "_start"),
                            _wasi_without_memory(module))
    if reason is None and steps.traced():
        reason = "the task is traced (its wasm.instantiate/wasm.run spans come from the in-process runtime)"
    if reason is None:
        with steps.step("wasm.link"):
            _prepare_module(engine, module, export, where)  # ExportNotFoundError, LinkError: at Create
        missing = conf.unmet_exec()
        if missing:
            reason = f"linux.seccomp denies {', '.join(missing)}, which wasmtime-min needs after the filter"
    if reason is None:
        try:
            plan = prepare_min(data, p.args, tuple(guest_env(p)), p.cwd,
                               [DirHandle(x.host, x.guest, x.mutable, x.fd) for x in preopens], sandbox, export,
                               where, cache_dir_from(p.cache_dir), conf)
            key = module_key(data, sandbox, export, cache_dir_from(p.cache_dir))
            if key is not None:  # the next Create of this module skips wasmtime-py (runwasm.wasm.fast_min)
                verdict.remember(cache_dir_from(p.cache_dir), key)
            return plan
        except WasiSetupError as err:  # NoArtifactError, a read-only view, the CLI missing
            reason = str(err)
    log.info("%s runs in process (wasmtime-py): %s", where, reason)
    return None


def _plan_component(p: WasmTaskPayload, engine: wasmtime.Engine, comp: wc.Component, data: bytes,
                    export: str | None, where: str, sandbox: Sandbox, preopens: list[Preopen],
                    conf: Confinement) -> ServePlan | None:
    """The ``wasmtime run`` plan of a command component (the full CLI: ``wasmtime-min`` has no
    component model; ``runwasm.wasm.cli_run``), or None (logged with the reason). Export and link
    errors are raised here first, as for the in-process route."""
    _prepare_component(engine, comp, export, where, sandbox.unknown_imports)  # ExportNotFoundError, LinkError
    reason = why_in_process(sandbox, True, export)
    if reason is None and steps.traced():
        reason = "the task is traced (its wasm.instantiate/wasm.run spans come from the in-process runtime)"
    if reason is None:
        missing = conf.unmet_exec()
        if missing:
            reason = f"linux.seccomp denies {', '.join(missing)}, which the wasmtime CLI needs after the filter"
    if reason is None:
        try:
            return prepare_run(data, p.args, tuple(guest_env(p)), p.cwd,
                               [DirHandle(x.host, x.guest, x.mutable, x.fd) for x in preopens], sandbox,
                               where, cache_dir_from(p.cache_dir), conf)
        except WasiSetupError as err:  # a read-only view, the CLI missing
            reason = str(err)
    log.info("%s runs in process (wasmtime-py): %s", where, reason)
    return None


def describe_trap(err: BaseException) -> str:
    """One log line for a guest failure: message, trap code and (multi-line) wasm backtrace."""
    if isinstance(err, wasmtime.Trap):
        code = err.trap_code.name if err.trap_code is not None else "none"
        return f"wasm trap: {err.message} (trap code {code})\n{err}"
    return f"wasm runtime error: {type(err).__name__}: {err}"


def _cause_chain(err: BaseException) -> list[str]:
    """wasmtime's error text split into its causes: ``"<head>\n\nCaused by:\n    <cause>..."``."""
    head, sep, rest = str(err).rstrip("\n").partition("\n\nCaused by:\n")
    chain = [head]
    if sep:
        causes = [line[4:] if line.startswith("    ") else line for line in rest.split("\n")]
        numbered = all(c.partition(": ")[0].isdigit() for c in causes if c and not c.startswith(" "))
        for line in causes:
            if numbered and line and not line.startswith(" "):
                chain.append(line.partition(": ")[2])
            elif chain[1:] and (not numbered or line.startswith(" ")):
                chain[-1] += "\n" + line
            else:
                chain.append(line)
    return chain


def cli_report(task: PreparedTask, err: BaseException) -> str:
    """The failure as the wasmtime CLI prints it on stderr (``wasmtime run`` of the same module)."""
    invoke = "failed to invoke command default" if task.export in ("", "_start") or task.cli_run \
        else f"failed to invoke `{task.export}`"
    chain = [invoke, *_cause_chain(err)] if isinstance(err, (wasmtime.Trap, wasmtime.WasmtimeError)) else [str(err)]
    lines = [f"Error: failed to run main module `{task.module_path}`", "", "Caused by:"]
    for i, cause in enumerate(chain):
        lines.append(f"    {i}: {cause}")
    return "\n".join(lines) + "\n"


def _report(fd: int, text: str) -> None:
    data = text.encode("utf-8", "replace")
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError as err:  # the reader is gone: the log line still has it
        log.warning("failed to write the trap report to the task's stderr: %s", err)


def _variant_status(value: Any) -> int:
    tag = getattr(value, "tag", None)
    return 1 if tag == "err" else 0


def run(task: PreparedTask, report_fd: int | None = None) -> int:
    """Instantiate and run the entry point; return the exit status (see module doc). A trap or
    runtime failure is logged, and reported on ``report_fd`` (the task's stderr) when given."""
    with steps.step("wasm.run", **{"runwasm.wasm.export": task.cli_run or task.export}) as attrs:
        status = _run(task, report_fd)
        attrs["process.exit.code"] = status
        return status


def _run(task: PreparedTask, report_fd: int | None) -> int:
    store = task.store
    try:
        if task.pre is not None:
            with steps.step("wasm.instantiate"):
                instance = task.pre.instantiate(store)
            if task.initialize:  # WASI reactor ABI: _initialize runs once before any other export
                init = instance.exports(store)["_initialize"]
                assert isinstance(init, wasmtime.Func)
                init(store)
            func = instance.exports(store)[task.export]
            assert isinstance(func, wasmtime.Func)
            func(store)
            return 0
        assert task.component is not None
        assert task.component_linker is not None
        with steps.step("wasm.instantiate"):
            inst = task.component_linker.instantiate(store, task.component)
        if task.cli_run is not None:
            idx = inst.get_export_index(store, task.cli_run)
            fidx = inst.get_export_index(store, "run", idx) if idx is not None else None
            cfunc = inst.get_func(store, fidx) if fidx is not None else None
        else:
            cfunc = inst.get_func(store, task.export)
        if cfunc is None:
            raise WasmError(f"failed to find {task.cli_run or task.export!r} after instantiation")
        return _variant_status(cfunc(store))
    except GuestExit as ex:
        return ex.code & 0xFF
    except wasmtime.ExitTrap as ex:
        return ex.code & 0xFF
    except (wasmtime.Trap, wasmtime.WasmtimeError, WasmError) as err:
        log.error("%s: %s", task.module_path, describe_trap(err))
        if report_fd is not None:
            _report(report_fd, cli_report(task, err))
        return EXIT_TRAP
