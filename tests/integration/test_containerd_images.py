"""One image for containerd and the harness: ``runwasm run --containerd`` / ``runwasm image
pull-containerd`` take an image out of containerd's content store (reusing ``runwasm
snapshotter``'s EROFS layers by chain ID), and ``runwasm image push-containerd`` writes one of
runwasm's images into containerd, where ``ctr run`` starts it with runc and with runwasm.

Each flavour (1.6, 2.3.4) gets a private containerd with the runwasm snapshotter as a proxy
plugin (the docs/examples snippet), as in ``test_snapshotter.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.images import busybox_image, layered_image
from runwasm.oci.digest import Digest
from runwasm.oci.images import ImageStore
from runwasm.oci.resolve import resolve
from runwasm.oci.store import ContentStore
from tests.integration.daemon import (
    CONTAINERD23_MISSING,
    RUNC_RUNTIME,
    RUNWASM_RUNTIME,
    Containerd,
    containerd23_bin,
    containerd_binary,
    venv_bin,
)
from tests.integration.snapshotter import SNAPSHOTTER, SnapshotterDaemon, mounts_under, proxy_config

pytestmark = pytest.mark.privileged
BUSYBOX = "docker.io/runwasm/share-busybox:1"
LAYERED = "docker.io/runwasm/share-layered:1"


@dataclass
class Env:
    cd: Containerd
    sn: SnapshotterDaemon
    tmp: Path

    def runwasm(self, *args: str, root: Path) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, RUNWASM_ROOT=str(root))
        return subprocess.run([str(venv_bin() / "runwasm"), *args], env=env, capture_output=True, text=True,
                              timeout=300, check=False)

    def ctrd(self) -> tuple[str, ...]:
        return ("--containerd", self.cd.address, "--namespace", self.cd.namespace)


@pytest.fixture(scope="module", params=["1.6", "2.3"], ids=["cd16", "cd23"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    flavour: str = request.param
    if flavour == "1.6" and containerd_binary() is None:
        pytest.skip("containerd binary not found on PATH (install Debian's containerd: scripts/install-system.sh)")
    if flavour == "2.3" and containerd23_bin() is None:
        pytest.skip(CONTAINERD23_MISSING)
    sockdir = Path(tempfile.mkdtemp(prefix="rwsh-", dir="/tmp"))  # short: unix socket path limit
    cd = Containerd(flavour=flavour, namespace=f"rwsh{os.getpid()}", extra_config=proxy_config(flavour, sockdir / "sn.sock"))
    sn = SnapshotterDaemon(sockdir / "root", sockdir / "sn.sock", cd.address)
    sn.start()
    try:
        with cd:
            yield Env(cd, sn, tmp_path_factory.mktemp(f"share{flavour}"))
    finally:
        sn.stop()
        for m in reversed(mounts_under(sockdir)):
            os.system(f"umount -l {m}")  # noqa: S605 - only our own temp dir
        shutil.rmtree(sockdir, ignore_errors=True)


def _diff_ids(root: Path, ref: str) -> list[Digest]:
    cs = ContentStore(root)
    return list(resolve(cs, ImageStore(root).get(ref).target).config.diff_ids)


def test_image_unpacked_by_the_snapshotter_runs_under_runwasm_run_without_reconversion(env: Env) -> None:
    env.cd.ctr("images", "import", "--snapshotter", SNAPSHOTTER, str(layered_image(env.tmp / "l.tar", LAYERED)),
               timeout=180)
    snap_layers = sorted(env.sn.root.glob("s/*/layer.erofs"))
    root = env.tmp / "store-a"
    script = "echo $(cat /etc/keep); ls /etc/gone 2>&1 | wc -l; ls /d; echo $(cat /top)"
    res = env.runwasm("run", *env.ctrd(), "--snapshotter-root", str(env.sn.root), "--rootfs-mode", "erofs",
                      LAYERED, "sh", "-c", script, root=root)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["2", "1", "new", "3"], res.stdout
    # the harness's layers are the snapshotter's files (hard links), not conversions of its own
    diffs = _diff_ids(root, LAYERED)
    assert len(diffs) == len(snap_layers) == 3, snap_layers
    for diff in diffs:
        ours = root / "layers" / diff.hex / "layer.erofs"
        assert any(os.path.samefile(ours, p) for p in snap_layers), f"{ours} was converted again"
    # a second pull copies nothing and links nothing new
    res = env.runwasm("image", "pull-containerd", *env.ctrd(), "--snapshotter-root", str(env.sn.root), LAYERED,
                      root=root)
    assert res.returncode == 0, res.stderr
    assert ": 0 blobs copied from containerd, 5 already stored, 0 EROFS layers taken" in res.stdout, res.stdout


def test_image_from_containerd_without_snapshotter_is_converted_by_the_harness(env: Env) -> None:
    env.cd.ctr("images", "import", str(busybox_image(env.tmp / "bb.tar", BUSYBOX)), timeout=180)
    root = env.tmp / "store-b"
    res = env.runwasm("image", "pull-containerd", *env.ctrd(), BUSYBOX, root=root)
    assert res.returncode == 0, res.stderr
    assert ": 3 blobs copied from containerd, 0 already stored, 0 EROFS layers taken" in res.stdout, res.stdout
    res = env.runwasm("run", BUSYBOX, "echo", "from-containerd", root=root)
    assert (res.returncode, res.stdout.strip()) == (0, "from-containerd"), res.stderr


def test_image_from_runwasm_store_runs_under_ctr_with_runc_and_runwasm(env: Env) -> None:
    root = env.tmp / "store-c"
    ref = "docker.io/runwasm/share-pushed:1"
    res = env.runwasm("image", "import", "--name", ref, str(layered_image(env.tmp / "p.tar", ref)), root=root)
    assert res.returncode == 0, res.stderr
    res = env.runwasm("image", "push-containerd", *env.ctrd(), ref, root=root)
    assert res.returncode == 0, res.stderr
    assert ": 5 blobs written to containerd" in res.stdout, res.stdout
    target = ImageStore(root).get(ref).target
    listed = env.cd.ctr("images", "ls").stdout
    assert ref in listed, listed
    assert str(target.digest) in listed, listed
    script = "echo $(cat /etc/keep); ls /etc/gone 2>&1 | wc -l; ls /d; echo $(cat /top)"
    for i, (runtime, snapshotter) in enumerate([(RUNC_RUNTIME, SNAPSHOTTER), (RUNWASM_RUNTIME, SNAPSHOTTER),
                                                (RUNC_RUNTIME, "")]):
        extra = ("--snapshotter", snapshotter) if snapshotter else ()
        out = env.cd.run(ref, f"pushed-{i}", "sh", "-c", script, runtime=runtime, extra=extra, timeout=120)
        assert out.returncode == 0, out.output
        assert out.stdout.split() == ["2", "1", "new", "3"], (runtime, out.stdout)
    # pushing again is idempotent (blobs exist, the record is updated)
    res = env.runwasm("image", "push-containerd", *env.ctrd(), ref, root=root)
    assert res.returncode == 0, res.stderr
    # the GC labels keep the blobs after the lease is gone: a synchronous GC pass (removing a
    # second name with --sync) leaves every blob of the image in containerd
    env.cd.ctr("images", "tag", ref, ref + "-gc")
    env.cd.ctr("images", "rm", "--sync", ref + "-gc")
    fetched = env.cd.ctr("content", "ls", "-q").stdout.split()
    cs = ContentStore(root)
    assert {str(d) for d in cs.list()} <= set(fetched), fetched


def test_errors_name_the_image_or_blob(env: Env) -> None:
    root = env.tmp / "store-d"
    res = env.runwasm("image", "pull-containerd", *env.ctrd(), "docker.io/runwasm/none:1", root=root)
    assert res.returncode == 1, res
    assert "failed to get image 'docker.io/runwasm/none:1'" in res.stderr, res.stderr
    assert "not found" in res.stderr, res.stderr
    res = env.runwasm("image", "push-containerd", *env.ctrd(), "docker.io/runwasm/none:1", root=root)
    assert res.returncode == 1, res
    assert "not found in the image store" in res.stderr, res.stderr
    # a layer containerd lost: the pull names it, and nothing is recorded
    ref = "docker.io/runwasm/share-broken:1"
    tar = busybox_image(env.tmp / "broken.tar", ref)
    probe = root / "probe"
    res = env.runwasm("image", "import", "--name", ref, str(tar), root=probe)
    assert res.returncode == 0, res.stderr
    layer = resolve(ContentStore(probe), ImageStore(probe).get(ref).target).manifest.layers[0].digest
    env.cd.ctr("images", "import", "--no-unpack", str(tar), timeout=180)
    env.cd.ctr("content", "rm", str(layer))
    res = env.runwasm("image", "pull-containerd", *env.ctrd(), ref, root=root)
    assert res.returncode == 1, res
    assert str(layer) in res.stderr, res.stderr
    assert "does not hold it" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not ImageStore(root).list()
    assert not list(ContentStore(root).ingest_dir.iterdir())
    # a blob runwasm's store lost: the push names it
    ContentStore(probe).path(layer).unlink()
    res = env.runwasm("image", "push-containerd", *env.ctrd(), "--name", "docker.io/runwasm/share-b2:1", ref,
                      root=probe)
    assert res.returncode == 1, res
    assert str(layer) in res.stderr, res.stderr
    assert "does not hold it" in res.stderr, res.stderr
    assert "share-b2" not in env.cd.ctr("images", "ls", "-q").stdout
