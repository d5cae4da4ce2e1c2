"""Benchmark: start-to-exit of /bin/true through runwasm's Linux executor vs ``runc run`` on the
same bundle (``python -m tests.bench_linux``). Prints medians and the ratio; asserts nothing.

The executor figure covers prepare (cgroup) + spawn (zygote contract, in-process fork) + ready +
start + exit + destroy, i.e. what a resident shim pays; runc's includes its process start-up.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time

from tests.linux.harness import Bundle, Started, base_config


def _ours(b: Bundle) -> float:
    t0 = time.perf_counter()
    s = Started(b.launch())
    b.container.attach(s.pid)
    s.start()
    r = s.wait()
    b.container.destroy()
    dt = time.perf_counter() - t0
    assert r.status == 0, r
    return dt


def _runc(b: Bundle, i: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(["runc", "--root", str(b.dir / "runc-root"), "run", "--bundle", str(b.dir), f"{b.cid}-{i}"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(n: int = 30) -> None:
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    cfg = base_config(["/bin/true"])
    b = Bundle(cfg)
    try:
        for _ in range(3):
            _ours(b)
            _runc(b, -1 - _)
        ours = [_ours(b) for _ in range(n)]
        runc = [_runc(b, i) for i in range(n)]
    finally:
        b.cleanup()
        shutil.rmtree(b.dir, ignore_errors=True)
    mo, mr = statistics.median(ours), statistics.median(runc)
    print(f"runwasm linux executor: median {mo * 1000:.2f} ms (n={n}, min {min(ours) * 1000:.2f})")
    print(f"runc run:               median {mr * 1000:.2f} ms (n={n}, min {min(runc) * 1000:.2f})")
    print(f"ratio runwasm/runc: {mo / mr:.2f}")


if __name__ == "__main__":
    main()
