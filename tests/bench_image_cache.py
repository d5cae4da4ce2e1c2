"""Benchmark: compiled artifacts of an OCI Wasm image's layer in containerd's content store.

Run: ``.venv/bin/python -m tests.bench_image_cache [FUNCS]`` (part of ``make bench``). The
synthetic module of ``tests.bench_cache`` (FUNCS chained functions, default 8000: seconds to
compile) is packed as a runwasi-flavour image (the module is the layer) and imported into a
private containerd 2.3.4 whose shims use a private, empty node cache root. Through ``ctr run --rm``:

- first run: no artifact anywhere (compile in the shim server's child, publish to the store);
- second run: a new shim loads the artifact from the content store (no compile);
- 8 concurrent first runs: after ``ctr images rm --sync`` (which takes the artifact) and a
  re-import, 8 ``ctr run`` (8 shims) started together: wall time until the last is done, and how
  many of them compiled (the shim servers' log lines).

No timing is asserted anywhere. Skipped with the reason when containerd 2.3.4 is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

COMPILED = re.compile(r"layer sha256:[0-9a-f]{64}: compiled module in")
LOADED = re.compile(r"loaded from the content store")


def main() -> None:
    from tests.bench_cache import make_module
    from tests.integration.daemon import CONTAINERD23_MISSING, Containerd, containerd23_bin
    from tests.integration.images import pack_wasm_image

    if containerd23_bin() is None:
        print(f"OCI image compile cache: skipped ({CONTAINERD23_MISSING})")
        return
    funcs = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    tmp = Path(tempfile.mkdtemp(prefix="rwbic-"))
    cache = tmp / "cache"
    try:
        module = tmp / "big.wasm"
        make_module(funcs, module)
        tar = tmp / "big.tar"
        ref = pack_wasm_image(module, tar, "runwasm.bench/big:1", "runwasi")
        with Containerd(namespace=f"rwbic{os.getpid()}", flavour="2.3",
                        env={"RUNWASM_WASM_CACHE": str(cache)}) as d:
            d.ctr("images", "import", "--all-platforms", str(tar))

            def run(cid: str) -> float:
                t0 = time.monotonic()
                res = d.run(ref, cid, timeout=600)
                took = time.monotonic() - t0
                if res.returncode != 0 or res.stdout != "big module ran\n":
                    raise RuntimeError(f"ctr run {cid} failed ({res.returncode}): {res.output[-2000:]}")
                return took

            def counts(since: int) -> tuple[int, int]:
                text = d.log_path.read_text(errors="replace")[since:]
                return len(COMPILED.findall(text)), len(LOADED.findall(text))

            mark = d.log_path.stat().st_size
            first = run("bic-first")
            first_counts = counts(mark)
            mark = d.log_path.stat().st_size
            second = run("bic-second")
            second_counts = counts(mark)
            d.ctr("images", "rm", "--sync", ref)
            d.ctr("images", "import", "--all-platforms", str(tar))
            mark = d.log_path.stat().st_size
            t0 = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(run, [f"bic-herd-{i}" for i in range(8)]))
            herd = time.monotonic() - t0
            herd_counts = counts(mark)
            artifacts = [ln for ln in d.ctr("content", "ls").stdout.splitlines() if "runwasm.io/cwasm-key=" in ln]
            d.remove_all_containers()
        print(f"OCI Wasm image (runwasi flavour, module {module.stat().st_size} bytes, {funcs} functions) via "
              f"ctr run --rm on containerd 2.3.4; {len(artifacts)} artifact(s) in the content store at the end")
        print("| case | wall | compiles / loads from the store |")
        print("| --- | --- | --- |")
        print(f"| first run, no artifact | {first:.2f} s | {first_counts[0]} / {first_counts[1]} |")
        print(f"| second run (new shim) | {second:.2f} s | {second_counts[0]} / {second_counts[1]} |")
        print(f"| 8 concurrent first runs (8 shims) | {herd:.2f} s for all 8 | {herd_counts[0]} / {herd_counts[1]} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
