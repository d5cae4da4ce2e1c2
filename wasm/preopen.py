"""The guest's environment and preopened directory handles of a Wasm task (stdlib only: shared by
``runwasm.wasm.task`` and the wasmtime-py-free ``runwasm.wasm.fast_min``); see ``runwasm.wasm.task``
for what cwd and PWD mean to the guest."""

from __future__ import annotations

import os
from dataclasses import dataclass

from runwasm.wasm.errors import WasiSetupError
from runwasm.wasm.payload import WasmTaskPayload
from runwasm.wasm.resolve import resolve_in_rootfs
from runwasm.wasm.sandbox import Sandbox


def guest_env(p: WasmTaskPayload) -> list[tuple[str, str]]:
    env = [(k, v) for k, _, v in (item.partition("=") for item in p.env)]
    if p.cwd != "/" and not any(k == "PWD" for k, _ in env):
        env.append(("PWD", p.cwd))
    return env


@dataclass(frozen=True, slots=True)
class Preopen:
    """A directory the guest sees at ``guest``, held open as ``fd`` (O_PATH) since before the
    credential switch; ``host`` is for messages."""

    host: str
    guest: str
    mutable: bool
    fd: int


def open_preopens(p: WasmTaskPayload, sandbox: Sandbox | None = None) -> list[Preopen]:
    """Open the rootfs (``/``), bind-mount sources, the sandbox's directories and the cwd (``.``)
    as directory handles, with the caller's credentials (see ``runwasm.wasm.confine``).
    Raises ``WasiSetupError``."""
    wanted: list[tuple[str, str, bool]] = [(os.path.realpath(p.rootfs), "/", not p.rootfs_readonly)]
    wanted += [(host, guest, True) for host, guest in p.preopens]
    wanted += [(x.host, x.guest, not x.readonly) for x in (sandbox.preopens if sandbox else ())]
    if p.cwd != "/":
        wanted.append((str(resolve_in_rootfs(p.rootfs, p.cwd)), ".", not p.rootfs_readonly))
    out: list[Preopen] = []
    try:
        for host, guest, mutable in wanted:
            try:
                fd = os.open(host, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as err:
                raise WasiSetupError(f"failed to preopen {host!r} as {guest!r}: expected a directory on the "
                                     f"host: {err.strerror}") from err
            out.append(Preopen(host, guest, mutable, fd))
    except BaseException:
        close_preopens(out)
        raise
    return out


def close_preopens(preopens: list[Preopen]) -> None:
    for pre in preopens:
        os.close(pre.fd)
