"""Observability overhead (``make bench`` runs ``main()``): tracing on vs off.

1. ``ctr run --rm hello.wasm`` through private containerd daemons, one with ``OTEL_*`` pointing at
   an in-process OTLP/HTTP receiver (containerd 2.3.4 exports its own spans and propagates the
   context; Debian's 1.6 has no OTLP plugin, so there only the shim exports) and one without,
   runs interleaved; median and min wall time.
2. The shim's own start-up, through the harness library: ``shim start`` wall time, then the time
   until the new server answers its first RPC (``Connect``: server boot, including the OTel
   SDK/exporter set-up when configured), then ``Shutdown`` + ``shim delete``; with and without
   ``OTEL_*``.

No assertions on figures. ``python -m tests.bench_otel [-n N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "fixtures" / "build" / "wasm" / "hello.wasm"


def _ms(xs: list[float]) -> tuple[str, str]:
    if not xs:
        return "nan", "nan"
    return f"{statistics.median(xs) * 1000:.1f}", f"{min(xs) * 1000:.1f}"


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*headers), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)])


@contextmanager
def _no_otel_env() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)


def bench_ctr(n: int, warmup: int = 2) -> str:
    from runwasm.shim.harness.otlp_receiver import HttpReceiver
    from tests.integration.daemon import Containerd, containerd23_bin, containerd_binary
    from tests.integration.images import pack_wasm_image

    out = []
    tiers = []
    if containerd_binary() is not None:
        tiers.append(("1.6", "1.6"))
    if containerd23_bin() is not None:
        tiers.append(("2.3.4", "2.3"))
    for version, flavour in tiers:
        with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
            rx = stack.enter_context(HttpReceiver())
            on_env = {**rx.env(), "OTEL_SERVICE_NAME": "containerd"}
            daemons = {}
            for mode, env in (("off", {}), ("on", on_env)):
                d = Containerd(namespace=f"rwob{mode}{os.getpid()}", flavour=flavour, env=env)
                daemons[mode] = stack.enter_context(d)
                tar = Path(tmp) / f"hello-{mode}.tar"
                ref = pack_wasm_image(HELLO, tar, "runwasm.bench/hello:1")
                d.ctr("images", "import", "--all-platforms", str(tar))
            samples: dict[str, list[float]] = {"off": [], "on": []}
            fails = {"off": 0, "on": 0}
            for i in range(warmup + n):
                for mode, d in daemons.items():
                    argv = d.ctr_argv(*d.run_args(ref, f"ob{i}{mode}"))
                    t0 = time.perf_counter()
                    proc = subprocess.run(argv, capture_output=True, text=True, env=d.env(), timeout=60, check=False)
                    dt = time.perf_counter() - t0
                    if proc.returncode != 0:
                        fails[mode] += 1
                    elif i >= warmup:
                        samples[mode].append(dt)
            rows = [(f"OTEL_* {'set' if m == 'on' else 'unset'}", *_ms(samples[m]), str(len(samples[m])), str(fails[m]))
                    for m in ("off", "on")]
            ratio = statistics.median(samples["on"]) / statistics.median(samples["off"]) if all(samples.values()) \
                else float("nan")
            spans = len(rx.collected.spans)
        who = "containerd and the shim export" if version != "1.6" else "only the shim exports (no OTLP plugin in 1.6)"
        out += [f"ctr run --rm hello.wasm, containerd {version} ({who}); n={n}, {warmup} warm-ups, interleaved",
                _table(("case", "median ms", "min ms", "n", "fail"), rows),
                f"tracing on / off (median): {ratio:.2f}x; spans received: {spans}", ""]
    return "\n".join(out) if out else "ctr run: skipped (no containerd found)"


async def _startup_once(env: dict[str, str], i: int) -> tuple[float, float, float]:
    from google.protobuf import empty_pb2

    from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
    from runwasm.shim.harness.bundle import make_wasm_bundle
    from runwasm.shim.harness.driver import Harness, connected

    async with Harness() as h:
        h.shim_env = env
        cid = f"su{i}"
        bundle = h.new_bundle(cid)
        make_wasm_bundle(bundle, HELLO, [], [])
        t0 = time.perf_counter()
        address, version = await h.shim_start(cid, bundle)
        t1 = time.perf_counter()
        async with connected(address, version) as t:
            await t.call("Connect", pb.ConnectRequest(id=cid), pb.ConnectResponse)
            t2 = time.perf_counter()
            await t.call("Shutdown", pb.ShutdownRequest(id=cid), empty_pb2.Empty)
        t3 = time.perf_counter()
        await h.shim_delete(cid, bundle)
        t4 = time.perf_counter()
    return t1 - t0, t2 - t1, t4 - t3


def bench_startup(n: int) -> str:
    from runwasm.shim.harness.otlp_receiver import HttpReceiver

    with HttpReceiver() as rx, _no_otel_env():
        modes = {"unset": {}, "set": rx.env()}
        res: dict[str, list[tuple[float, float, float]]] = {m: [] for m in modes}
        for i in range(n + 1):
            for mode, env in modes.items():
                r = asyncio.run(_startup_once(env, i))
                if i:
                    res[mode].append(r)
    rows = []
    for mode in modes:
        cols = list(zip(*res[mode], strict=True))
        rows.append((f"OTEL_* {mode}", *(_ms(list(c))[0] for c in cols), str(len(res[mode]))))
    return "\n".join([f"shim start-up through the harness (median ms, n={n}, 1 warm-up, interleaved)",
                      _table(("case", "start", "server up (first RPC)", "shutdown+delete", "n"), rows)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.bench_otel")
    p.add_argument("-n", type=int, default=10)
    args = p.parse_args(argv)
    print(bench_startup(args.n), flush=True)
    print(flush=True)
    print(bench_ctr(args.n), flush=True)


if __name__ == "__main__":
    main()
