"""Spec mounts on the real kernel: recursive attributes (``rro``...) reach submounts, options
runwasm does not understand are refused naming the mount, and runc agrees on the result."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.linux.harness import Bundle, Started, base_config, run_container, run_runc

pytestmark = pytest.mark.privileged

if os.geteuid() != 0:
    pytest.skip("needs root", allow_module_level=True)

# write to the bind mount and to its submount; report each result
_PROBE = ("for f in /data/top /data/sub/inner; do if echo x > $f 2>/dev/null; then echo $f=rw; "
          "else echo $f=ro; fi; done; grep ' /data' /proc/self/mountinfo | cut -d' ' -f5,6")


def _cfg(src: Path, options: list[str]) -> dict[str, object]:
    cfg = base_config(["sh", "-c", _PROBE])
    cfg["mounts"].append({"destination": "/data", "type": "bind", "source": str(src), "options": options})
    return cfg


def _results(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if line.endswith(("=ro", "=rw")) and " " not in line)


def test_rro_makes_the_bind_and_its_submounts_read_only(tree: Path) -> None:
    cfg = _cfg(tree, ["rbind", "rro", "rprivate"])
    r = run_container(cfg)
    assert r.status == 0, r.stderr
    assert _results(r.stdout) == {"/data/top": "ro", "/data/sub/inner": "ro"}, r.stdout
    # the host's mounts are untouched: the attributes changed the container's copies only
    (tree / "top").write_text("host")
    (tree / "sub" / "inner").write_text("host")
    theirs = run_runc(cfg)
    assert theirs.status == 0, theirs.stderr
    assert _results(theirs.stdout) == _results(r.stdout)


def test_ro_alone_leaves_the_submount_writable_like_runc(tree: Path) -> None:
    cfg = _cfg(tree, ["rbind", "ro"])
    r = run_container(cfg)
    assert r.status == 0, r.stderr
    assert _results(r.stdout) == {"/data/top": "ro", "/data/sub/inner": "rw"}, r.stdout
    assert _results(run_runc(cfg).stdout) == _results(r.stdout)


def test_rrw_after_rro_and_rnoexec(tree: Path) -> None:
    cfg = _cfg(tree, ["rbind", "rro", "rrw", "rnoexec"])
    cfg["process"]["args"] = ["sh", "-c", _PROBE + "; grep ' /data/sub ' /proc/self/mountinfo"]
    r = run_container(cfg)
    assert r.status == 0, r.stderr
    assert _results(r.stdout) == {"/data/top": "rw", "/data/sub/inner": "rw"}, r.stdout
    sub_line = [ln for ln in r.stdout.splitlines() if " /data/sub " in ln][-1]
    assert "noexec" in sub_line.split()[5], sub_line


def test_userns_host_network_sys_rbind_rro() -> None:
    """containerd 2.3's shape for ``hostNetwork`` + ``hostUsers: false``: /sys is an rbind of
    the host's /sys with ``rro``; the container (root in its user namespace) cannot write it,
    including submounts such as /sys/fs/cgroup."""
    probe = ("for f in /sys/kernel/mm/transparent_hugepage/enabled /sys/fs/cgroup/x; do "
             "if echo never > $f 2>/dev/null; then echo $f=rw; else echo $f=ro; fi; done; "
             "grep -c ' /sys' /proc/self/mountinfo; grep ' /sys ' /proc/self/mountinfo | cut -d' ' -f6")
    cfg = base_config(["sh", "-c", probe])
    cfg["linux"]["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user")]
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["maskedPaths"] = []
    cfg["mounts"] = [m for m in cfg["mounts"] if m["type"] not in ("sysfs", "cgroup")]
    cfg["mounts"].append({"destination": "/sys", "type": "bind", "source": "/sys",
                          "options": ["rbind", "nosuid", "noexec", "nodev", "rro"]})
    r = run_container(cfg, owner=100000)
    assert r.status == 0, r.stderr
    lines = r.stdout.splitlines()
    assert _results(r.stdout) == {"/sys/kernel/mm/transparent_hugepage/enabled": "ro", "/sys/fs/cgroup/x": "ro"}
    assert int(lines[2]) > 1, "the host's /sys submounts must be there"
    assert lines[3].startswith("ro,"), lines[3]


@pytest.mark.parametrize(("mount", "needle"), [
    ({"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "bogus"]},
     "mounts[8] (destination '/data'): unknown mount option 'bogus'"),
    ({"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "mode=755"]},
     "unknown mount option 'mode=755' (a bind mount takes no filesystem data)"),
    ({"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "rro2"]},
     "unknown mount option 'rro2'"),
    ({"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["tmpcopyup"]},
     "option 'tmpcopyup' is not supported"),
])
def test_unknown_mount_option_is_refused_before_ready(mount: dict[str, object], needle: str) -> None:
    cfg = base_config(["true"])
    cfg["mounts"].append(mount)
    b = Bundle(cfg)
    try:
        s = Started(b.launch())
        assert s.msg["type"] == "error", s.msg
        assert s.msg["kind"] == "InvalidArgumentError", s.msg
        assert needle in s.msg["message"], s.msg["message"]
        assert s.wait().status == 1
    finally:
        b.cleanup()


def test_filesystem_data_reaches_the_kernel() -> None:
    """``key=value`` words and known bare words of the type are filesystem data, not refused."""
    cfg = base_config(["sh", "-c", "grep ' /data ' /proc/self/mountinfo"])
    cfg["mounts"].append({"destination": "/data", "type": "tmpfs", "source": "tmpfs",
                          "options": ["nosuid", "size=128k", "mode=700", "noswap", "rro"]})
    r = run_container(cfg)
    assert r.status == 0, r.stderr
    fields = r.stdout.split()
    assert fields[5].startswith("ro,"), r.stdout
    assert {"size=128k", "mode=700", "noswap"} <= set(fields[-1].split(",")), r.stdout


def test_privileged_devices_include_ptmx() -> None:
    """``ctr run --privileged`` lists every host device, /dev/ptmx included; /dev/ptmx must still
    become the link to the container's own devpts (it failed with EPERM: the node was created
    through that link, inside the devpts)."""
    cfg = base_config(["sh", "-c", "readlink /dev/ptmx; ls -l /dev/null /dev/tty | cut -c1; ls /dev/pts"])
    cfg["linux"]["devices"] = [
        {"path": "/dev/ptmx", "type": "c", "major": 5, "minor": 2, "fileMode": 0o666},
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666},
        {"path": "/dev/tty", "type": "c", "major": 5, "minor": 0, "fileMode": 0o666},
    ]
    cfg["linux"]["resources"] = {"devices": [{"allow": True, "access": "rwm"}]}
    r = run_container(cfg)
    assert r.status == 0, r.stderr
    assert r.stdout.splitlines()[:3] == ["pts/ptmx", "c", "c"], r.stdout
    theirs = run_runc(cfg)
    assert theirs.status == 0, theirs.stderr
    assert theirs.stdout.splitlines()[:3] == r.stdout.splitlines()[:3]


def _peer_group(path: Path) -> str:
    """The ``shared:N`` tag of the host mount holding ``path`` ("" if it is not shared)."""
    best, tag = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = fields[4]
        if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best = point
            tag = next((o for o in fields[6:fields.index("-")] if o.startswith("shared:")), "")
    return tag


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A host tmpfs with shared propagation (a peer group of its own), unmounted afterwards."""
    from runwasm.linux import syscalls as sc

    d = Path(tempfile.mkdtemp(prefix="rwshared-"))
    sc.mount("tmpfs", str(d), "tmpfs", 0, "size=64k")
    try:
        sc.mount(None, str(d), None, sc.MS_SHARED, None)
        yield d
    finally:
        sc.umount2(str(d), sc.MNT_DETACH)
        d.rmdir()


@pytest.mark.parametrize("propagation", ["rshared", "shared"])
def test_shared_rootfs_propagation_pivots_and_the_bidirectional_mount_joins_the_hosts_peers(
        shared_dir: Path, propagation: str) -> None:
    """``linux.rootfsPropagation: rshared`` with an ``rshared`` bind (what containerd sends for a
    Bidirectional mount, critest's mount propagation spec): pivot_root refuses a shared new root
    or parent (EINVAL before the fix); like runc, the bind is a peer of the host's mount (mounts
    propagate both ways) and the container's ``/`` gets the propagation after the pivot."""
    group = _peer_group(shared_dir)
    assert group.startswith("shared:")
    tree = shared_dir
    cfg = _cfg(tree, ["rbind", "rshared"])
    cfg["linux"]["rootfsPropagation"] = propagation
    cfg["process"]["args"] = ["sh", "-c", "awk '$5 == \"/data\" || $5 == \"/\" {print $5, $7}' /proc/self/mountinfo"]
    r = run_container(cfg)
    assert r.status == 0, r.stderr
    tags = dict(line.split() for line in r.stdout.splitlines())
    assert tags["/data"] == group, r.stdout
    assert tags["/"].startswith("shared:"), r.stdout
    assert tags["/"] != group, r.stdout  # shared, but not with the host
    theirs = run_runc(cfg)
    assert theirs.status == 0, theirs.stderr
    assert dict(line.split() for line in theirs.stdout.splitlines())["/data"] == group, theirs.stdout
