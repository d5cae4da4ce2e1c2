"""Create of a plain Wasm task without wasmtime-py: the ``wasmtime-min`` plan from a cached verdict.

Stdlib only (no wasmtime-py import), so the first container on a node does not wait for the
zygote or the workload to import wasmtime-py. ``prepare_fast`` does what
``runwasm.wasm.task.prepare`` does for a core module that takes ``wasmtime-min``
(``runwasm.wasm.min_run``), with the module's load and link check replaced by a verdict that an
earlier full ``prepare`` of the same module and configuration recorded (``runwasm.wasm.verdict``):
the confinement check, resolving and reading ``args[0]`` as the container's user (same errors),
the ``\\0asm`` magic, seccomp's exec needs, then ``min_run.prepare_min`` (the CLI artifact,
verified by its HMAC) and the credential drop.

It returns None, having changed nothing but the confinement's check, whenever it cannot vouch
for the task: no verdict (then the full check runs and set-up errors stay Create errors), the
task is traced (``steps.traced``; steps recorded for the debug log or the metrics only do not
count), a networked sandbox, a reason in
``min_run.why_in_process`` that the sandbox alone gives, seccomp denying the exec, no artifact.
An image's wasmtime-py artifact (``precompiled_file``) is not looked at: it serves the in-process
route only, and ``task.prepare`` falls back to compiling when it is unusable (never an error).
"""

from __future__ import annotations

import logging
from pathlib import Path

from runwasm.oci import steps
from runwasm.wasm import verdict
from runwasm.wasm.confine import Confinement, NoConfinement
from runwasm.wasm.detect import SNIFF_BYTES, classify_bytes, parse_entrypoint
from runwasm.wasm.errors import HttpServeError, InvalidModuleError, WasiSetupError
from runwasm.wasm.http_serve import MIN_CLI, DirHandle, ServePlan, find_cli
from runwasm.wasm.min_run import prepare_min, why_in_process
from runwasm.wasm.node_key import cache_dir_from
from runwasm.wasm.payload import WasmTaskPayload
from runwasm.wasm.preopen import close_preopens, guest_env, open_preopens
from runwasm.wasm.resolve import open_module_fd, read_module, resolve_module_path
from runwasm.wasm.sandbox import Sandbox

log = logging.getLogger(__name__)

def clis(cache_dir: Path) -> tuple[Path, ...]:
    """The full CLI and ``wasmtime-min``, as verdict keys name them. Raises HttpServeError."""
    return (find_cli(cache_dir), find_cli(cache_dir, MIN_CLI))


def module_key(data: bytes, sandbox: Sandbox, export: str | None, cache_dir: Path) -> str | None:
    """``verdict.verdict_key`` of the task, or None when a CLI cannot be found or stat'ed."""
    try:
        return verdict.verdict_key(data, sandbox, export, clis(cache_dir))
    except (OSError, HttpServeError):
        return None


def min_route(p: WasmTaskPayload) -> tuple[Sandbox, str, str | None] | None:
    """(sandbox, module path, export) of a task whose sandbox lets it take ``wasmtime-min``, or
    None (a networked sandbox, a reason of ``min_run.why_in_process``). Raises what
    ``parse_entrypoint`` raises. Shared with the server's native plan (``shim/spawn/native.py``)."""
    sandbox = Sandbox.from_json(p.sandbox) if p.sandbox else Sandbox()
    path, export = parse_entrypoint(p.args[0])
    if sandbox.network or why_in_process(sandbox, False, export) is not None:
        return None
    return sandbox, path, export


def vouched(data: bytes, sandbox: Sandbox, export: str | None, cache_dir: Path) -> bool:
    """``data`` is a core module (components and WAT take the full path) and a link-check
    verdict for it and this configuration is cached."""
    if classify_bytes(data[:SNIFF_BYTES]) != "module":
        return False
    key = module_key(data, sandbox, export, cache_dir)
    return key is not None and verdict.known(cache_dir, key)


def _read(p: WasmTaskPayload, path: str, conf: Confinement, root_fd: int) -> tuple[bytes, str]:
    if p.module_file is not None:
        try:
            with open(p.module_file, "rb") as f:
                return f.read(), p.module_name or p.module_file
        except OSError as err:
            raise InvalidModuleError(f"failed to read module {p.module_file!r}: {err.strerror}") from err
    host = resolve_module_path(p.rootfs, path, p.env, p.cwd)
    with conf.as_guest():  # the container's user must be able to read the module
        fd = open_module_fd(p.rootfs, host, root_fd)
    return read_module(p.rootfs, host, fd), f"{path} (host {host})"


def prepare_fast(p: WasmTaskPayload, confinement: Confinement | None = None) -> ServePlan | None:
    """The ``wasmtime-min`` plan of ``p`` if a verdict vouches for it, else None (see module doc).
    Raises the ``WasmError`` subclasses ``task.prepare`` would raise for resolving and reading the
    module, or the confinement's errors; on success the confinement has dropped to the guest."""
    conf = confinement if confinement is not None else NoConfinement()
    conf.check()
    if steps.traced():  # its wasm.instantiate/wasm.run spans come from the in-process route
        return None
    route = min_route(p)
    if route is None:
        return None
    sandbox, path, export = route
    cache_dir = cache_dir_from(p.cache_dir)
    preopens = open_preopens(p, sandbox)
    try:
        with steps.step("wasm.resolve", **{"runwasm.wasm.module": p.args[0]}) as attrs:
            data, where = _read(p, path, conf, preopens[0].fd)
            attrs["runwasm.wasm.module.size"] = len(data)
        if not vouched(data, sandbox, export, cache_dir) or conf.unmet_exec():
            return None
        try:
            plan = prepare_min(data, p.args, tuple(guest_env(p)), p.cwd,
                               [DirHandle(x.host, x.guest, x.mutable, x.fd) for x in preopens], sandbox, export,
                               where, cache_dir, conf)
        except WasiSetupError as err:  # NoArtifactError, a read-only view: the full path decides
            log.debug("%s: cached verdict unusable (%s): full check", where, err)
            return None
        conf.drop()
        log.debug("%s: wasmtime-min plan from a cached link-check verdict", where)
        return plan
    finally:
        close_preopens(preopens)
