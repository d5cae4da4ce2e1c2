"""``runwasm snapshotter`` as containerd's proxy snapshotter (1.6: snapshots only, the walking
differ extracts into upper dirs and Commit converts them to EROFS; 2.3.4: snapshots and the
runwasm differ, tar -> EROFS in one pass), with the runc shim and with runwasm.

Each flavour gets its own containerd and snapshotter (module scope); the config is the
docs/examples snippet. The tests prove: images unpack into EROFS layers; busybox, a layered
image with whiteouts and an opaque dir, and a Wasm image run through both shims; restarting
both daemons keeps everything working; removing the images releases every mount, loop device
and file; broken layers fail with a clear error in ``ctr`` and leave nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.images import GOARCH, busybox_image, busybox_layer, layered_image, tar_of, write_image
from tests.conftest import built_fixture
from tests.integration.daemon import (
    CONTAINERD23_MISSING,
    RUNC_RUNTIME,
    RUNWASM_RUNTIME,
    Containerd,
    CtrResult,
    containerd23_bin,
    containerd_binary,
)
from tests.integration.images import pack_wasm_image
from tests.integration.snapshotter import (
    SMALL,
    SNAPSHOTTER,
    SnapshotterDaemon,
    loops_backed_by,
    mounts_under,
    proxy_config,
    store_files,
)

pytestmark = pytest.mark.privileged
BUSYBOX = "docker.io/runwasm/snap-busybox:1"
LAYERED = "docker.io/runwasm/snap-layered:1"


@dataclass
class Env:
    cd: Containerd
    sn: SnapshotterDaemon
    root: Path
    tmp: Path
    small: SnapshotterDaemon

    def restart_both(self) -> None:
        self.sn.stop()
        self.cd.stop()
        self.sn.start()
        self.cd.start()

    def wait_reconnected(self, timeout: float = 60.0) -> None:
        """containerd redials a proxy plugin with gRPC backoff: calls fail UNAVAILABLE for a few
        seconds after the snapshotter came back. ``snapshots usage`` reaches the proxy."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.cd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "usage", check=False)
            if res.returncode == 0:
                return
            assert time.monotonic() < deadline, f"containerd did not reconnect to the snapshotter: {res.output}"
            time.sleep(0.2)

    def import_(self, tar: Path, *extra: str, check: bool = True, snapshotter: str = SNAPSHOTTER) -> CtrResult:
        return self.cd.ctr("images", "import", "--snapshotter", snapshotter, *extra, str(tar), check=check,
                           timeout=180)

    def run(self, image: str, cid: str, *args: str, runtime: str) -> str:
        res = self.cd.run(image, cid, *args, runtime=runtime, extra=("--snapshotter", SNAPSHOTTER), timeout=120)
        assert res.returncode == 0, f"{runtime} {cid}: {res.output}\n{self.sn.log_tail()}"
        return res.stdout


@pytest.fixture(scope="module", params=["1.6", "2.3"], ids=["cd16", "cd23"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    flavour: str = request.param
    if flavour == "1.6" and containerd_binary() is None:
        pytest.skip("containerd binary not found on PATH (install Debian's containerd: scripts/install-system.sh)")
    if flavour == "2.3" and containerd23_bin() is None:
        pytest.skip(CONTAINERD23_MISSING)
    tmp = tmp_path_factory.mktemp(f"snap{flavour}")
    import tempfile

    sockdir = Path(tempfile.mkdtemp(prefix="rwsn-", dir="/tmp"))  # short: unix socket path limit
    root = sockdir / "root"
    sock = sockdir / "sn.sock"
    small_root = sockdir / "small"  # a 1 MiB tmpfs: the full-disk case
    small_sock = sockdir / "small.sock"
    cd = Containerd(flavour=flavour, namespace=f"rwsn{os.getpid()}",
                    extra_config=proxy_config(flavour, sock) + proxy_config(flavour, small_sock, name=SMALL))
    small_root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "rwsn-small", str(small_root)], check=True)
    sn = SnapshotterDaemon(root, sock, cd.address)
    small = SnapshotterDaemon(small_root, small_sock, cd.address)
    sn.start()
    small.start()
    try:
        with cd:
            yield Env(cd, sn, root, tmp, small)
    finally:
        sn.stop()
        small.stop()
        leftover = mounts_under(sockdir)
        for m in reversed(leftover):
            os.system(f"umount -l {m}")  # noqa: S605 - only our own temp dir
        import shutil

        shutil.rmtree(sockdir, ignore_errors=True)  # the tests assert release; this is for failed ones


def _remove_images(env: Env, *refs: str) -> None:
    for ref in refs:
        env.cd.ctr("images", "rm", "--sync", ref, check=False)
    # containerd's GC removes the snapshots (Remove, then Cleanup) once nothing references them
    res = env.cd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls")
    assert res.stdout.strip().splitlines()[1:] == [], res.stdout


def test_busybox_and_layered_image_via_runc_and_runwasm_across_restarts(env: Env) -> None:
    env.import_(busybox_image(env.tmp / "bb.tar", BUSYBOX))
    env.import_(layered_image(env.tmp / "layered.tar", LAYERED))
    layers = sorted(env.root.glob("s/*/layer.erofs"))
    # the layered image's bottom layer is busybox's: one snapshot (same chain ID)
    assert len(layers) == 3, f"expected 3 committed EROFS layers, got {layers}"
    assert all(p.read_bytes()[1024:1028] == b"\xe2\xe1\xf5\xe0" for p in layers)
    applied = env.sn.log_path.read_text().count("applied tar+gzip layer")
    # 2.3.4 sends layers to the runwasm differ (one pass tar -> EROFS); 1.6 has no diff proxy
    assert applied == (3 if env.cd.flavour == "2.3" else 0), env.sn.log_tail()
    script = "echo $(cat /etc/keep); ls /etc/gone 2>&1 | wc -l; ls /d; echo $(cat /top)"
    for rnd in range(2):
        for runtime in (RUNC_RUNTIME, RUNWASM_RUNTIME):
            tag = "runc" if runtime == RUNC_RUNTIME else "rw"
            assert env.run(BUSYBOX, f"snbb-{tag}-{rnd}", "echo", "hello", runtime=runtime).strip() == "hello"
            out = env.run(LAYERED, f"snly-{tag}-{rnd}", "sh", "-c", script, runtime=runtime).split()
            # /etc/gone whited out (ls prints one error line), /d opaque: only 'new'
            assert out == ["2", "1", "new", "3"], (runtime, out)
        if rnd == 0:
            env.restart_both()
    assert mounts_under(env.root), "layer mounts are expected while images exist"
    _remove_images(env, BUSYBOX, LAYERED)
    assert store_files(env.root) == []
    assert mounts_under(env.root) == []
    assert loops_backed_by(env.root) == []


def test_wasm_image_via_runwasm(env: Env) -> None:
    tar = env.tmp / "hello.tar"
    ref = pack_wasm_image(built_fixture("wasm", "hello.wasm"), tar, "runwasm.test/snap-hello:1")
    env.import_(tar, "--all-platforms")
    out = env.run(ref, "snwasm", runtime=RUNWASM_RUNTIME)
    assert "hello" in out.lower(), out
    _remove_images(env, ref)
    assert store_files(env.root) == []
    assert mounts_under(env.root) == []


def test_native_erofs_layers_are_used_as_is(env: Env) -> None:
    """containerd 2.3.4 hands EROFS-layer images (what ``runwasm image convert --erofs`` writes)
    to the runwasm differ, which checks and keeps the image bytes; 1.6 has no EROFS at all."""
    if env.cd.flavour != "2.3":
        pytest.skip("containerd 1.6 has no diff proxy, and its walking differ cannot apply EROFS layers")
    from runwasm.oci.erofs.from_tar import tar_to_erofs

    blobs = []
    for i, tar in enumerate([busybox_layer(Path("/bin/busybox").read_bytes()), tar_of([("native", b"yes")])]):
        out = env.tmp / f"native{i}.erofs"
        tar_to_erofs(io.BytesIO(tar), out, uuid=bytes(16))
        blobs.append(out.read_bytes())
    ref = "docker.io/runwasm/snap-native:1"
    tar = _broken(env, "native", [], blobs=blobs, diff_ids=["sha256:" + hashlib.sha256(b).hexdigest() for b in blobs],
                  layer_media_type="application/vnd.erofs.layer.v1")
    env.import_(tar)
    kept = sorted(p.read_bytes() for p in env.root.glob("s/*/layer.erofs"))
    assert sorted(blobs) == kept, "the layers must be the image's own EROFS bytes"
    assert "applied erofs layer" in env.sn.log_path.read_text()
    for runtime in (RUNC_RUNTIME, RUNWASM_RUNTIME):
        assert env.run(ref, f"snnative-{runtime[-7:].replace('.', '')}", "cat", "/native",
                       runtime=runtime).strip() == "yes"
    _remove_images(env, ref)
    assert store_files(env.root) == []


def test_snapshotter_sigkill_keeps_state(env: Env) -> None:
    env.import_(busybox_image(env.tmp / "bb2.tar", BUSYBOX))
    env.sn.stop(signal.SIGKILL)
    env.sn.start()
    env.wait_reconnected()
    assert env.run(BUSYBOX, "snkill", "echo", "ok", runtime=RUNC_RUNTIME).strip() == "ok"
    _remove_images(env, BUSYBOX)
    assert store_files(env.root) == []


# --- bad layers: a clear error in ctr, nothing half-written ----------------------------------


def _broken(env: Env, name: str, layers: list[bytes], **kw: object) -> Path:
    arch = GOARCH.get(platform.machine(), platform.machine())
    return write_image(env.tmp / f"{name}.tar", f"docker.io/runwasm/snap-{name}:1", layers, {"Cmd": ["/bin/sh"]},
                       "linux", arch, **kw)  # type: ignore[arg-type]


def _assert_failed_cleanly(env: Env, res: CtrResult, *needles: str, root: Path | None = None) -> None:
    root = root or env.root
    assert res.returncode != 0, res.output
    assert any(n.lower() in res.output.lower() for n in needles), f"expected one of {needles} in: {res.output}"
    _gc(env)
    assert store_files(root) == [], f"half-written snapshots left: {store_files(root)}"
    assert [p for p in root.glob("s/*/.tmp-*")] == []
    assert mounts_under(root) == []


def _gc(env: Env) -> None:
    """Remove our images and run containerd's garbage collector synchronously: containerd drops a
    failed unpack's snapshot from its own metadata at once but removes it from the snapshotter
    (Remove, then Cleanup) only when GC runs. ``images rm --sync`` of a throw-away image runs it."""
    refs = [r for r in env.cd.ctr("images", "ls", "-q").stdout.split() if "snap-" in r]
    gc_ref = "docker.io/runwasm/snap-gc:1"
    env.cd.ctr("images", "import", "--no-unpack", str(busybox_image(env.tmp / "gc.tar", gc_ref)))
    env.cd.ctr("images", "rm", "--sync", *refs, gc_ref)


def test_corrupt_layer_fails_cleanly(env: Env) -> None:
    garbage = b"\x1f\x8b\x08\x00" + os.urandom(4096)  # a gzip header, then noise
    res = env.import_(_broken(env, "corrupt", [], blobs=[garbage], diff_ids=["sha256:" + "0" * 64]), check=False)
    _assert_failed_cleanly(env, res, "decompress", "gzip", "flate", "invalid")


def test_diff_id_mismatch_fails_cleanly(env: Env) -> None:
    layer = tar_of([("f", b"data")])
    res = env.import_(_broken(env, "diffid", [layer], diff_ids=["sha256:" + "1" * 64]), check=False)
    _assert_failed_cleanly(env, res, "wrong diff id", "diff id")


def test_path_traversal_does_not_escape(env: Env) -> None:
    victim = Path(f"/tmp/rwsn-escape-{os.getpid()}")
    layer = tar_of([(f"../../../../../../..{victim}", b"pwned")])
    res = env.import_(_broken(env, "traversal", [layer]), check=False)
    assert not victim.exists(), f"a layer wrote {victim} outside the snapshot"
    if env.cd.flavour == "2.3":  # the runwasm differ refuses '..' outright
        _assert_failed_cleanly(env, res, "contains '..'")
    else:  # 1.6's walking differ resolves the name inside the snapshot root (containerd's choice)
        assert res.returncode == 0, res.output
        _remove_images(env, "docker.io/runwasm/snap-traversal:1")
        assert store_files(env.root) == []


def test_full_disk_fails_cleanly(env: Env) -> None:
    big = tar_of([("big", os.urandom(3 << 20))])  # 3 MiB of noise on a 1 MiB tmpfs
    res = env.import_(_broken(env, "full", [big]), check=False, snapshotter=SMALL)
    _assert_failed_cleanly(env, res, "no space left on device", root=env.small.root)
    assert os.statvfs(env.small.root).f_bfree == os.statvfs(env.small.root).f_blocks - _used_by_meta(env.small.root)


def _used_by_meta(root: Path) -> int:
    """Blocks the metadata file (and nothing else) may hold on the small tmpfs."""
    meta = root / "metadata.json"
    st = os.statvfs(root)
    return -(-meta.stat().st_size // st.f_frsize) if meta.exists() else 0
