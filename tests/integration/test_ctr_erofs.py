"""containerd 2.3.4's EROFS snapshotter with runwasm mounting the EROFS layers itself.

runwasm's ``-info`` advertises ``containerd.io/runtime-allow-mounts`` = ``erofs,format/*,mkdir/*``,
so containerd hands Create the snapshotter's raw mount list (EROFS layer blobs and a
``format/mkdir/overlay``) and runwasm mounts it in a private mount namespace
(``shim/server/private_rootfs.py``). Checked for a busybox image (Linux executor), a multi-layer
image with a whiteout and an opaque directory, and a Wasm image: the container sees the merged
tree, the host's mount table never holds an EROFS mount or the overlay (``/proc/self/mountinfo``
of this test process, read while the container runs), and after ``--rm`` and after a SIGKILLed
server no EROFS mount, overlay or loop device of the snapshotter's blobs is left. Debian's
erofs-utils 1.5 has no tar mode, so containerd's EROFS differ is skipped and the walking differ
unpacks, with the snapshotter converting each layer to ``layer.erofs`` on commit.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.images import busybox_layer
from fixtures.oci.imagebuild import LINUX_AMD64, Entry, Layer, tar_layer, write_image
from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from tests.conftest import built_fixture
from tests.integration.daemon import CONTAINERD23_MISSING, Containerd, containerd23_bin, wait_status
from tests.integration.images import pack_wasm_image

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/filesystems")
                                or "erofs" not in Path("/proc/filesystems").read_text(),
                                reason="the kernel has no EROFS (containerd's EROFS snapshotter skips itself)")

EROFS_CONFIG = Path(__file__).resolve().parents[2] / "docs" / "examples" / "containerd-2.3-erofs.toml"
BUSYBOX = "runwasm.test/erofs-busybox:1"
MULTI = "docker.io/runwasm/erofs-multi:1"
HELLO = "runwasm.test/erofs-hello:1"
SLEEP = "runwasm.test/erofs-sleep:1"


@pytest.fixture(scope="module")
def cd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    if containerd23_bin() is None:
        pytest.skip(CONTAINERD23_MISSING)
    # the README's snippet (docs/examples/containerd-2.3-erofs.toml), as users configure it
    with Containerd(flavour="2.3", extra_config=EROFS_CONFIG.read_text()) as daemon:
        plugins = daemon.ctr("plugins", "ls").stdout
        if not any("erofs" in ln and "snapshotter" in ln and " ok" in ln for ln in plugins.splitlines()):
            pytest.skip(f"containerd's EROFS snapshotter did not load here:\n{plugins}")
        out = tmp_path_factory.mktemp("erofs-images")
        bb = busybox_layer(Path("/bin/busybox").read_bytes())
        layers = [
            Layer(mt.OCI_LAYER_TAR, bb, Digest.of_bytes(bb)),
            tar_layer([Entry("etc/", "dir", mode=0o755), Entry("etc/gone", data=b"x"), Entry("etc/kept", data=b"k"),
                       Entry("data/", "dir", mode=0o755), Entry("data/old1", data=b"1"),
                       Entry("data/old2", data=b"2")]),
            tar_layer([Entry("etc/.wh.gone"), Entry("data/.wh..wh..opq"), Entry("data/new", data=b"n"),
                       Entry("etc/top", data=b"top\n")], "zstd"),
        ]
        write_image(out / "multi.tar", layers, MULTI, LINUX_AMD64, argv=("/bin/sh",))
        from fixtures.images import busybox_image

        busybox_image(out / "bb.tar", BUSYBOX)
        pack_wasm_image(built_fixture("wasm", "hello.wasm"), out / "hello.tar", HELLO)
        pack_wasm_image(built_fixture("wasm", "sleep.wasm"), out / "sleep.tar", SLEEP)
        for tar in ("bb.tar", "multi.tar"):
            daemon.ctr("images", "import", "--local", "--snapshotter", "erofs", str(out / tar))
        for tar in ("hello.tar", "sleep.tar"):  # unpacked into the erofs snapshotter by `ctr run`
            daemon.ctr("images", "import", "--all-platforms", str(out / tar))
        yield daemon
    # as for the shared daemons: shims exited on their own, nothing of ours is left
    assert daemon.killed_leftovers == [], f"shim processes had to be killed: {daemon.killed_leftovers}"
    assert daemon.leftovers() == []


def _host_mounts(cd: Containerd) -> list[str]:
    """Mount points in this (the host's) mount namespace that belong to the daemon's tree, or are
    EROFS or overlay mounts of its snapshotter."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point, fstype = fields[4], fields[fields.index("-") + 1]
            if point.startswith(str(cd.dir)) or (fstype in ("erofs", "overlay") and str(cd.dir) in line):
                found.append(f"{fstype} {point}")
    return found


def _loops_of(cd: Containerd) -> list[str]:
    """Loop devices whose backing file is in the daemon's tree."""
    out = []
    for b in Path("/sys/block").glob("loop*"):
        try:
            backing = (b / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing.startswith(str(cd.dir)):
            out.append(f"{b.name} {backing}")
    return out


def _released(cd: Containerd, timeout: float = 20.0) -> tuple[list[str], list[str]]:
    deadline = time.monotonic() + timeout
    while True:
        mounts, loops = _host_mounts(cd), _loops_of(cd)
        if (not mounts and not loops) or time.monotonic() > deadline:
            return mounts, loops
        time.sleep(0.2)


def _run(cd: Containerd, image: str, cid: str, *args: str, rm: bool = True, detach: bool = False,
         extra: tuple[str, ...] = ()) -> str:
    res = cd.run(image, cid, *args, rm=rm, detach=detach, extra=("--snapshotter", "erofs", *extra), timeout=90)
    assert res.returncode == 0, f"{res.output}\n{cd.log_tail()}"
    return res.stdout


def test_advertised_mounts_reach_the_shim_raw(cd: Containerd) -> None:
    out = _run(cd, BUSYBOX, "erofs-mi", "cat", "/proc/self/mountinfo")
    root = next(ln for ln in out.splitlines() if ln.split()[4] == "/")
    assert " - overlay " in root, out
    # the lowers are runwasm's layer mount points in the bundle, not the mount manager's targets
    assert "/layers/0" in root, root
    assert _released(cd) == ([], [])


def test_busybox_runs_with_nothing_mounted_on_the_host(cd: Containerd) -> None:
    _run(cd, BUSYBOX, "erofs-bb", "sleep", "1000", rm=False, detach=True)
    try:
        wait_status(cd, "erofs-bb", "RUNNING", timeout=30)
        assert _host_mounts(cd) == []
        res = cd.ctr("task", "exec", "--exec-id", "e1", "erofs-bb", "sh", "-c", "echo hi > /tmp/x && cat /tmp/x")
        assert res.stdout.strip() == "hi"
    finally:
        cd.ctr("task", "kill", "-s", "SIGKILL", "erofs-bb", check=False)
        wait_status(cd, "erofs-bb", "STOPPED", timeout=30)
        cd.ctr("task", "rm", "erofs-bb", check=False)
        cd.ctr("container", "rm", "erofs-bb", check=False)
    assert _released(cd) == ([], [])


def test_multilayer_whiteouts_and_opaque_dirs(cd: Containerd) -> None:
    out = _run(cd, MULTI, "erofs-multi", "sh", "-c",
               "ls /etc | grep -E '^(gone|kept|top)$'; echo --; ls /data; cat /etc/top")
    assert out.split() == ["kept", "top", "--", "new", "top"], out
    assert _released(cd) == ([], [])


def test_wasm_image(cd: Containerd) -> None:
    out = _run(cd, HELLO, "erofs-wasm")
    assert "hello" in out.lower(), out
    assert _released(cd) == ([], [])


def _server_of(cd: Containerd, cid: str) -> int:
    """The shim server of ``cid`` (its zygote has the same command line and the server as parent)."""
    mine = [p for p in cd.our_processes()
            if f"-id\0{cid}\0_runwasm_serve" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
    servers = [p for p in mine if int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1]) not in mine]
    assert len(servers) == 1, (mine, servers)
    return servers[0]


def test_wasm_task_running_from_the_private_rootfs(cd: Containerd) -> None:
    """The module is a file of the EROFS rootfs (/sleep.wasm): the workload reads it in the
    private namespace; an exec of the same module too."""
    _run(cd, SLEEP, "erofs-wsleep", rm=False, detach=True)
    try:
        wait_status(cd, "erofs-wsleep", "RUNNING", timeout=30)
        assert _host_mounts(cd) == []
        cd.ctr("task", "exec", "-d", "--exec-id", "e1", "--fifo-dir", str(cd.fifo_dir), "erofs-wsleep", "/sleep.wasm")
        assert _host_mounts(cd) == []
    finally:
        cd.ctr("task", "kill", "-a", "-s", "SIGKILL", "erofs-wsleep", check=False)
        wait_status(cd, "erofs-wsleep", "STOPPED", timeout=30)
        cd.ctr("task", "rm", "erofs-wsleep", check=False)
        cd.ctr("container", "rm", "erofs-wsleep", check=False)
    assert _released(cd) == ([], [])


def _mount_ns_fds(pid: int) -> list[str]:
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("mnt:"):
            out.append(link)
    return out


def test_one_server_releases_each_containers_namespace(cd: Containerd) -> None:
    """Two containers in one shim server (a group, like a pod): deleting one drops the server's
    hold on its private namespace while the other keeps running."""
    group = ("--annotation", "io.containerd.runwasm.v1.group=erofs-grp")
    _run(cd, BUSYBOX, "erofs-grp-a", "sleep", "1000", rm=False, detach=True, extra=group)
    try:
        wait_status(cd, "erofs-grp-a", "RUNNING", timeout=30)
        server = _server_of(cd, "erofs-grp-a")
        assert len(_mount_ns_fds(server)) == 1
        _run(cd, BUSYBOX, "erofs-grp-b", "sleep", "1000", rm=False, detach=True, extra=group)
        wait_status(cd, "erofs-grp-b", "RUNNING", timeout=30)
        two = _mount_ns_fds(server)
        assert len(set(two)) == 2, two
        cd.ctr("task", "kill", "-s", "SIGKILL", "erofs-grp-b")
        wait_status(cd, "erofs-grp-b", "STOPPED", timeout=30)
        cd.ctr("task", "rm", "erofs-grp-b")
        cd.ctr("container", "rm", "erofs-grp-b")
        assert _mount_ns_fds(server) == [two[0]]
        assert _host_mounts(cd) == []
        assert cd.ctr("task", "exec", "--exec-id", "e", "erofs-grp-a", "true").returncode == 0
    finally:
        cd.ctr("task", "kill", "-s", "SIGKILL", "erofs-grp-a", check=False)
        wait_status(cd, "erofs-grp-a", "STOPPED", timeout=30)
        cd.ctr("task", "rm", "erofs-grp-a", check=False)
        cd.ctr("container", "rm", "erofs-grp-a", check=False)
    assert _released(cd) == ([], [])


@pytest.mark.parametrize(("image", "args"), [(BUSYBOX, ("sleep", "1000")), (SLEEP, ())], ids=["linux", "wasm"])
def test_sigkilled_server_leaves_nothing(cd: Containerd, image: str, args: tuple[str, ...]) -> None:
    """SIGKILL the shim server while the task runs: containerd's ``delete`` (shim/entry/delete.py)
    kills the workload; the private namespace goes with the last process, and with it the EROFS
    mounts and any loop device."""
    cid = "erofs-kill-" + ("lx" if image == BUSYBOX else "wasm")
    _run(cd, image, cid, *args, rm=False, detach=True)
    wait_status(cd, cid, "RUNNING", timeout=30)
    os.kill(_server_of(cd, cid), signal.SIGKILL)
    cd.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
    cd.ctr("task", "rm", "-f", cid, check=False)
    cd.ctr("container", "rm", cid, check=False)
    assert _released(cd) == ([], [])
