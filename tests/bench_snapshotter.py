"""Benchmark: unpacking a multi-layer image into containerd's overlayfs snapshotter, containerd
2.3.4's EROFS snapshotter (walking differ, then mkfs.erofs on commit) and ``runwasm
snapshotter`` (2.3.4: the runwasm differ, tar -> EROFS in one pass; 1.6: walking differ, then
runwasm's dir -> EROFS on commit); start time of a container from each; disk used; removal time.

Run as root: ``.venv/bin/python -m tests.bench_snapshotter [-n N] [--layers-from DIR]``.
The image: busybox, then ``DIR`` (default the Python stdlib, ~50 MB of small files) split in
two layers, then a layer that whites out one subdir and makes another opaque.

Method, per (containerd, snapshotter), in a private daemon: the image's content is imported
first with ``--no-unpack`` (not timed); then

* unpack = wall time of ``ctr images import --snapshotter S`` of the same tarball (content
  already present, so this is the unpack);
* start = median wall time of ``ctr run --rm --snapshotter S IMAGE ID /bin/true`` (runc shim);
* disk = ``du`` of the snapshotter's root after unpack (the content store is not counted);
* removal = wall time of ``ctr images rm --sync`` (containerd's GC removes the snapshots).

Each case runs ``--rounds`` times (fresh daemon each round); medians printed, then ratios to
the overlayfs row of the same containerd. No assertions: figures only.
"""

from __future__ import annotations

import argparse
import io
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fixtures.images import GOARCH, busybox_layer, tar_of, write_image
from tests.integration.daemon import RUNC_RUNTIME, Containerd, containerd23_bin, containerd_binary
from tests.integration.snapshotter import SnapshotterDaemon, proxy_config

REF = "docker.io/runwasm/bench-layers:1"


def _tree_layer(src: Path, names: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n in names:
            tar.add(src / n, arcname=f"data/{n}", recursive=True)
    return buf.getvalue()


def build_image(out: Path, src: Path) -> tuple[Path, int]:
    names = sorted(p.name for p in src.iterdir() if not p.name.startswith("."))
    half = len(names) // 2
    dirs = [n for n in names if (src / n).is_dir()]
    top = tar_of([("data", None), (f"data/.wh.{dirs[0]}", b""), ("data/" + dirs[-1], None),
                  (f"data/{dirs[-1]}/.wh..wh..opq", b""), (f"data/{dirs[-1]}/only", b"x")])
    layers = [busybox_layer(Path("/bin/busybox").read_bytes()), _tree_layer(src, names[:half]),
              _tree_layer(src, names[half:]), top]
    arch = GOARCH.get(platform.machine(), platform.machine())
    write_image(out, REF, layers, {"Cmd": ["/bin/sh"]}, "linux", arch)
    return out, sum(len(x) for x in layers)


@dataclass
class Case:
    flavour: str
    snapshotter: str  # overlayfs | erofs | runwasm
    unpack: list[float]
    start: list[float]
    disk: list[int]
    remove: list[float]


def _config(flavour: str, sock: Path) -> str:
    if flavour == "1.6":
        return proxy_config("1.6", sock)
    body = proxy_config("2.3", sock)
    for sn in ("overlayfs", "erofs"):
        body += (f'\n[[plugins."io.containerd.transfer.v1.local".unpack_config]]\n  platform = "linux"\n'
                 f'  snapshotter = "{sn}"\n  differ = "walking"\n')
    return body


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sxB1", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def _timed_ctr(d: Containerd, *args: str, timeout: float = 900) -> float:
    t0 = time.perf_counter()
    d.ctr(*args, timeout=timeout)
    return time.perf_counter() - t0


def run_round(flavour: str, tar: Path, n: int, cases: dict[tuple[str, str], Case]) -> None:
    base = Path(tempfile.mkdtemp(prefix="rwbs-", dir="/tmp"))
    sock = base / "sn.sock"
    d = Containerd(flavour=flavour, namespace=f"rwbs{flavour.replace('.', '')}", extra_config=_config(flavour, sock))
    sn = SnapshotterDaemon(base / "root", sock, d.address)
    sn.start()
    try:
        with d:
            d.ctr("images", "import", "--no-unpack", str(tar), timeout=600)
            names = ["overlayfs", "erofs", "runwasm"] if flavour == "2.3" else ["overlayfs", "runwasm"]
            for name in names:
                c = cases.setdefault((flavour, name), Case(flavour, name, [], [], [], []))
                c.unpack.append(_timed_ctr(d, "images", "import", "--snapshotter", name, str(tar)))
                root = sn.root if name == "runwasm" else d.dir / "root" / f"io.containerd.snapshotter.v1.{name}"
                c.disk.append(_du(root))
                for i in range(n):
                    res = d.ctr(*d.run_args(REF, f"bs-{name}-{i}", "/bin/true", runtime=RUNC_RUNTIME,
                                            extra=("--snapshotter", name)), check=False, timeout=120)
                    if res.returncode != 0:
                        raise RuntimeError(f"ctr run via {name} failed: {res.output}")
                t = [_timed_ctr(d, *d.run_args(REF, f"bt-{name}-{i}", "/bin/true", runtime=RUNC_RUNTIME,
                                               extra=("--snapshotter", name)), timeout=120) for i in range(n)]
                c.start.append(statistics.median(t))
                c.remove.append(_timed_ctr(d, "images", "rm", "--sync", REF))
                d.ctr("images", "import", "--no-unpack", str(tar), timeout=600)  # content back for the next case
    finally:
        sn.stop()
        shutil.rmtree(base, ignore_errors=True)


def report(cases: dict[tuple[str, str], Case], raw: int) -> str:
    lines = [f"image: 4 layers, {raw / 1e6:.1f} MB of tar; medians over rounds",
             f"{'containerd':<11}{'snapshotter':<13}{'unpack':>10}{'x ovl':>7}{'start':>10}{'x ovl':>7}"
             f"{'disk MB':>9}{'x ovl':>7}{'remove':>10}{'x ovl':>7}"]
    for (flavour, name), c in sorted(cases.items()):
        ref = cases[(flavour, "overlayfs")]

        def m(xs: list[float]) -> float:
            return statistics.median(xs)

        lines.append(f"{flavour:<11}{name:<13}{m(c.unpack):>9.2f}s{m(c.unpack) / m(ref.unpack):>7.2f}"
                     f"{m(c.start) * 1000:>8.0f}ms{m(c.start) / m(ref.start):>7.2f}"
                     f"{m([float(x) for x in c.disk]) / 1e6:>9.1f}"
                     f"{m([float(x) for x in c.disk]) / m([float(x) for x in ref.disk]):>7.2f}"
                     f"{m(c.remove):>9.2f}s{m(c.remove) / m(ref.remove):>7.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.bench_snapshotter", description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=5, help="ctr runs per case for the start time (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="fresh-daemon rounds (default 3)")
    p.add_argument("--layers-from", default=f"/usr/lib/python{sys.version_info[0]}.{sys.version_info[1]}",
                   help="directory whose entries make the two big layers")
    args = p.parse_args(argv)
    flavours = [f for f, ok in (("1.6", containerd_binary()), ("2.3", containerd23_bin())) if ok]
    if not flavours:
        print("no containerd found: skipped")
        return
    with tempfile.TemporaryDirectory(prefix="rwbs-img-") as tmp:
        tar, raw = build_image(Path(tmp) / "img.tar", Path(args.layers_from))
        cases: dict[tuple[str, str], Case] = {}
        for _ in range(args.rounds):
            for flavour in flavours:
                run_round(flavour, tar, args.n, cases)
        print(report(cases, raw))


if __name__ == "__main__":
    main()
