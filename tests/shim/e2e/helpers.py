"""Helpers for the harness e2e tests: the real shim binary, driven over ttrpc like containerd does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import empty_pb2

from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
from runwasm.shim.harness import bundle as bundlemod
from runwasm.shim.harness.driver import Harness, TaskClient, connected, copy_fifo

__all__ = ["Harness", "TaskClient", "connected"]
from tests.conftest import built_fixture

TIMEOUT = 60.0
GROUP_ANNOTATION = "io.containerd.runwasm.v1.group"


def wasm(name: str) -> Path:
    return Path(built_fixture("wasm", name))


def make_bundle(h: Harness, cid: str, module: str, args: Sequence[str] = (), env: Sequence[str] = (),
                annotations: dict[str, str] | None = None) -> Path:
    bundle = Path(h.new_bundle(cid))
    bundlemod.make_wasm_bundle(bundle, wasm(module), list(args), list(env), annotations=annotations)
    return bundle


def raw_bundle(h: Harness, cid: str, config: dict[str, Any] | str, files: dict[str, bytes] | None = None) -> Path:
    bundle = Path(h.new_bundle(cid))
    rootfs = bundle / "rootfs"
    rootfs.mkdir()
    for name, data in (files or {}).items():
        (rootfs / name).write_bytes(data)
    (bundle / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return bundle


def server_pids(root: Path) -> list[int]:
    """Shim servers (``_runwasm_serve``) whose start settings name this harness directory."""
    p = subprocess.run(["pgrep", "-f", "_runwasm_serve"], capture_output=True, text=True, check=False)
    out = []
    for pid in (int(x) for x in p.stdout.split()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if str(root).encode() in environ:
            out.append(pid)
    return out


def mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if str(root) in line]


def assert_clean(root: Path) -> None:
    """No shim server of this harness is left, and nothing is mounted under it."""
    deadline = time.monotonic() + 10
    while (pids := server_pids(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pids:
        for pid in pids:  # do not leak them into later tests, then fail
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"shim servers still running after the test: {pids}")
    left = mounts_under(root)
    assert not left, f"mounts left under {root}: {left}"


def run(legacy: bool, body: Callable[[Harness], Awaitable[None]]) -> None:
    """Run ``body`` inside a fresh Harness (one protocol mode), then check nothing is left."""
    root: list[Path] = []

    async def main() -> None:
        async with asyncio.timeout(TIMEOUT), Harness(legacy=legacy) as h:
            root.append(h.root)
            await body(h)

    try:
        asyncio.run(main())
    finally:
        if root:
            assert_clean(root[0])


async def poll_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll external state (a file, another process) that has no event to await."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def log_with(path: Path, *needles: str, timeout: float = 30) -> str:
    """The text of the shim log at ``path`` once it holds every one of ``needles``: the lines
    travel through the log FIFO to the harness's reader, so they may land after the RPC that
    caused them returned (however busy the machine is); AssertionError after ``timeout``."""
    await poll_until(lambda: path.exists() and all(n in path.read_text() for n in needles), timeout,
                     f"{needles} in {path}")
    return path.read_text()


@dataclass
class Stdio:
    stdin: str
    stdout: str
    stderr: str
    out_file: Path
    err_file: Path
    done: asyncio.Event = field(default_factory=asyncio.Event)
    copiers: list[asyncio.Task[None]] = field(default_factory=list)

    def output(self) -> str:
        return self.out_file.read_text()

    def errors(self) -> str:
        return self.err_file.read_text()

    async def finish(self) -> None:
        self.done.set()
        if self.copiers:
            await asyncio.wait(self.copiers, timeout=5)
        for c in self.copiers:
            c.cancel()

    async def wait_output(self, text: str, timeout: float = 15) -> None:
        await poll_until(lambda: text in self.output(), timeout, f"{text!r} on stdout")


def stdio(h: Harness, cid: str) -> Stdio:
    """containerd-style FIFOs for ``cid`` with copiers into two files."""
    i, o, e = h.fifos(cid)
    s = Stdio(i, o, e, h.root / f"{cid}.out", h.root / f"{cid}.err")
    fds = []
    for path in (s.out_file, s.err_file):
        fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    s.copiers = [asyncio.create_task(_copy_and_close(o, fds[0], s.done)),
                 asyncio.create_task(_copy_and_close(e, fds[1], s.done))]
    return s


async def _copy_and_close(path: str, fd: int, done: asyncio.Event) -> None:
    try:
        await copy_fifo(path, fd, done)
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def shim(h: Harness, cid: str, bundle: Path) -> AsyncIterator[TaskClient]:
    """``start`` the shim for ``bundle`` and connect; ``delete`` it afterwards (as containerd does)."""
    address, version = await h.shim_start(cid, bundle)
    try:
        async with connected(address, version) as t:
            yield t
    finally:
        await h.shim_delete(cid, bundle)


async def create(t: TaskClient, cid: str, bundle: Path, io: Stdio | None = None) -> int:
    req = pb.CreateTaskRequest(id=cid, bundle=str(bundle))
    if io is not None:
        req.stdin, req.stdout, req.stderr = "", io.stdout, io.stderr
    resp = await t.call("Create", req, pb.CreateTaskResponse)
    return int(resp.pid)


async def start(t: TaskClient, cid: str) -> int:
    return int((await t.call("Start", pb.StartRequest(id=cid), pb.StartResponse)).pid)


async def wait(t: TaskClient, cid: str) -> pb.WaitResponse:
    resp: pb.WaitResponse = await t.call("Wait", pb.WaitRequest(id=cid), pb.WaitResponse)
    return resp


async def kill(t: TaskClient, cid: str, sig: int) -> None:
    await t.call("Kill", pb.KillRequest(id=cid, signal=sig), empty_pb2.Empty)


async def delete(t: TaskClient, cid: str) -> pb.DeleteResponse:
    resp: pb.DeleteResponse = await t.call("Delete", pb.DeleteRequest(id=cid), pb.DeleteResponse)
    return resp


async def state(t: TaskClient, cid: str) -> pb.StateResponse:
    resp: pb.StateResponse = await t.call("State", pb.StateRequest(id=cid), pb.StateResponse)
    return resp


async def shutdown(t: TaskClient, cid: str) -> None:
    await t.call("Shutdown", pb.ShutdownRequest(id=cid), empty_pb2.Empty, timeout=5)
