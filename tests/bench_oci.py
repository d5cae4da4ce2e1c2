"""Benchmark: a .tar.gz layer to a usable rootfs, runwasm (tar->EROFS + mount) vs GNU tar.

Run as root: ``.venv/bin/python -m tests.bench_oci [--source DIR] [-n N] [--no-cold]``.
One run measures, on the same tarball and disk:

* gz -> rootfs: ``tar_to_erofs`` from the gzip stream (fsync'd) + file-backed mount, vs
  ``tar -xzf`` + ``sync``;
* mount time alone (warm), and umount;
* removal: unlinking ``layer.erofs`` vs ``rm -rf`` of the extracted tree (each + sync);
* cold ``lstat`` walk (after ``drop_caches``) of the mounted image vs the extracted tree.

Prints medians [min..max] and the ratios. No assertions: figures only.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from runwasm.oci.erofs.from_tar import layer_uuid, tar_to_erofs
from runwasm.oci.mounts.syscalls import mount_erofs_file, umount


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:9.1f} ms [{min(xs) * 1000:.1f}..{max(xs) * 1000:.1f}]"


def _drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _walk(root: Path) -> int:
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lstat(os.path.join(dirpath, name))
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="/usr/lib/python3.11", help="tree to tar up (default %(default)s)")
    ap.add_argument("-n", type=int, default=3, help="repetitions (default %(default)s)")
    ap.add_argument("--no-cold", action="store_true", help="skip drop_caches runs")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_oci: needs root (mounts, drop_caches)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="rw-bench-", dir="/var/tmp"))
    try:
        return _run(work, Path(args.source), args.n, not args.no_cold)
    finally:
        subprocess.run(["umount", "-q", str(work / "mnt")], check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, source: Path, n: int, cold: bool) -> int:
    tgz = work / "layer.tar.gz"
    subprocess.run(["tar", "-czf", str(tgz), "--xattrs", "-C", str(source.parent), source.name], check=True)
    entries = _walk(source)
    print(f"source {source}: {entries} entries; layer.tar.gz {tgz.stat().st_size / 1e6:.1f} MB; n={n}")
    mnt, img, ext = work / "mnt", work / "layer.erofs", work / "ext"
    mnt.mkdir()
    t_tar, t_rw, t_mount, t_umount, t_rm, t_unlink = [], [], [], [], [], []
    for _ in range(n):
        ext.mkdir()
        subprocess.run(["sync"], check=True)
        t_tar.append(_timed(lambda: (subprocess.run(["tar", "-xzf", str(tgz), "-C", str(ext)], check=True),
                                     subprocess.run(["sync"], check=True))))

        def convert_and_mount() -> None:
            with gzip.open(tgz, "rb") as stream:
                tar_to_erofs(stream, img, uuid=layer_uuid("sha256:bench"))
            mount_erofs_file(img, mnt)
        subprocess.run(["sync"], check=True)
        t_rw.append(_timed(convert_and_mount))
        t_umount.append(_timed(lambda: umount(mnt)))
        t_mount.append(_timed(lambda: mount_erofs_file(img, mnt)))
        umount(mnt)
        subprocess.run(["sync"], check=True)
        t_rm.append(_timed(lambda: (shutil.rmtree(ext), subprocess.run(["sync"], check=True))))
        t_unlink.append(_timed(lambda: (img.unlink(), subprocess.run(["sync"], check=True))))
    print(f"gz -> rootfs   GNU tar -xzf + sync    {_fmt(t_tar)}")
    print(f"gz -> rootfs   runwasm EROFS + mount  {_fmt(t_rw)}   ratio runwasm/tar = "
          f"{statistics.median(t_rw) / statistics.median(t_tar):.2f}")
    print(f"mount (warm)   file-backed EROFS      {_fmt(t_mount)}   ratio tar/mount = "
          f"{statistics.median(t_tar) / statistics.median(t_mount):.0f}x")
    print(f"umount                                {_fmt(t_umount)}")
    print(f"removal        rm -rf + sync          {_fmt(t_rm)}")
    print(f"removal        unlink + sync          {_fmt(t_unlink)}   ratio rm/unlink = "
          f"{statistics.median(t_rm) / statistics.median(t_unlink):.1f}x")
    if cold:
        ext.mkdir()
        subprocess.run(["tar", "-xzf", str(tgz), "-C", str(ext)], check=True)
        with gzip.open(tgz, "rb") as stream:
            tar_to_erofs(stream, img, uuid=layer_uuid("sha256:bench"))
        w_img, w_dir = [], []
        for _ in range(n):
            _drop_caches()
            t0 = time.perf_counter()
            mount_erofs_file(img, mnt)
            count = _walk(mnt)
            w_img.append(time.perf_counter() - t0)
            umount(mnt)
            _drop_caches()
            t0 = time.perf_counter()
            count_dir = _walk(ext)
            w_dir.append(time.perf_counter() - t0)
        assert count == count_dir, (count, count_dir)
        print(f"cold walk      mount + lstat EROFS    {_fmt(w_img)}   ({count} entries)")
        print(f"cold walk      lstat extracted dir    {_fmt(w_dir)}   ratio erofs/dir = "
              f"{statistics.median(w_img) / statistics.median(w_dir):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
