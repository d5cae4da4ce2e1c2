"""A/B of ``ctr run --rm`` between this checkout and another one, in the same minutes.

Run: ``.venv/bin/python -m tests.bench_ab OTHER_CHECKOUT [N] [--flavour=2.3]`` (OTHER_CHECKOUT has
run ``make setup``, e.g. a worktree of main). Two private containerd daemons of one flavour, the
first resolving ``io.containerd.runwasm.v1`` to this checkout's venv, the second to the other's
(PATH decides, shim-protocol.md §17); each shim uses its own private warm template (the template
key differs per installation). After two warm-ups, N rounds, each running every case on both
daemons one after the other: Wasm hello via runwasm, busybox ``/bin/true`` via runc and via
runwasm; then N/2 rounds of the first container after boot (both templates stopped before each
sample). Prints medians and each case's ratio to the runc case of the same daemon. No figure is
asserted; the machine is shared, so only same-run ratios mean something.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WASM = ROOT / "fixtures" / "build" / "wasm"


def main() -> None:
    from fixtures.images import busybox_image
    from runwasm.shim.template import key, process
    from tests.integration.daemon import RUNC_RUNTIME, RUNWASM_RUNTIME, Containerd
    from tests.integration.images import pack_wasm_image

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    other = Path(args[0]).resolve()
    n = int(args[1]) if len(args) > 1 else 8
    flavour = "2.3" if "--flavour=2.3" in sys.argv[1:] else "1.6"
    tpl_dir = tempfile.mkdtemp(prefix="rwab-", dir="/run")
    os.environ[key.ENV_DIR] = tpl_dir

    class Other(Containerd):
        def env(self) -> dict[str, str]:
            env = super().env()
            env["PATH"] = f"{other / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
            return env

    try:
        with Containerd(namespace=f"rwabA{os.getpid()}", flavour=flavour) as a, \
                Other(namespace=f"rwabB{os.getpid()}", flavour=flavour) as b, tempfile.TemporaryDirectory() as tmp:
            wasm_ref = pack_wasm_image(WASM / "hello.wasm", Path(tmp) / "hello.tar", "runwasm.bench/hello:1")
            bb_ref = "runwasm.bench/busybox:1"
            busybox_image(Path(tmp) / "busybox.tar", bb_ref)
            for d in (a, b):
                d.ctr("images", "import", "--all-platforms", str(Path(tmp) / "hello.tar"))
                d.ctr("images", "import", str(Path(tmp) / "busybox.tar"))
            daemons = {"this": a, f"other ({other.name})": b}
            cases = [("hello.wasm runwasm", wasm_ref, RUNWASM_RUNTIME, (), "hello from wasm\n"),
                     ("busybox /bin/true runc", bb_ref, RUNC_RUNTIME, ("/bin/true",), ""),
                     ("busybox /bin/true runwasm", bb_ref, RUNWASM_RUNTIME, ("/bin/true",), "")]
            samples: dict[tuple[str, str], list[float]] = {}
            seq = 0

            def once(label: str, d: Containerd, ref: str, runtime: str, cargs: tuple[str, ...], expect: str) -> float:
                nonlocal seq
                seq += 1
                t0 = time.perf_counter()
                p = subprocess.run(d.ctr_argv(*d.run_args(ref, f"ab{seq}", *cargs, runtime=runtime)), env=d.env(),
                                   capture_output=True, text=True, timeout=60)
                dt = time.perf_counter() - t0
                if p.returncode != 0 or p.stdout != expect:
                    print(f"  {label}: run failed: {p.returncode} {(p.stdout + p.stderr)[:200]!r}")
                    return float("nan")
                return dt * 1000

            for i in range(2 + n):
                for case, ref, runtime, cargs, expect in cases:
                    for label, d in daemons.items():
                        dt = once(label, d, ref, runtime, cargs, expect)
                        if i >= 2:
                            samples.setdefault((label, case), []).append(dt)
            for _ in range(max(2, n // 2)):
                for label, d in daemons.items():
                    process.stop_templates(tpl_dir)
                    samples.setdefault((label, "first container (no template)"), []).append(
                        once(label, d, wasm_ref, RUNWASM_RUNTIME, (), "hello from wasm\n"))
                    time.sleep(3.0)  # let the template launched by that run finish its imports
            print(f"ctr run --rm, containerd {flavour}, median of n={n} (first container: n={max(2, n // 2)}), ms; "
                  "ratio to the runc case of the same daemon")
            for label in daemons:
                runc = statistics.median(samples[(label, "busybox /bin/true runc")])
                for case in [c[0] for c in cases] + ["first container (no template)"]:
                    m = statistics.median(samples[(label, case)])
                    print(f"  {label:<22} {case:<32} {m:7.1f}  {m / runc:5.2f}x")
    finally:
        process.stop_templates(tpl_dir)
        shutil.rmtree(tpl_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
