"""The init entry point on the real kernel: every spec field, checked from inside the
container by fixtures/linux/check.sh, and compared with runc on the same bundle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.linux.harness import Bundle, Started, base_config, run_container, run_runc

pytestmark = pytest.mark.privileged

if os.geteuid() != 0:
    pytest.skip("needs root", allow_module_level=True)


def _rich_config() -> dict[str, Any]:
    c = base_config(["check.sh"])
    c["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [27, 44], "umask": 0o027}
    c["process"]["cwd"] = "/work/dir"
    c["process"]["capabilities"]["inheritable"] = ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]
    c["domainname"] = "example.test"
    c["linux"]["sysctl"] = {"kernel.shmmni": "1024"}
    c["linux"]["devices"] = [{"path": "/dev/custom0", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666}]
    c["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"},
                                           {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
                               "memory": {"limit": 64 << 20}, "pids": {"limit": 50}}
    c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                             "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    return c


EXPECTED = {
    "pid": "1", "hostname": "rwtest", "domainname": "example.test", "uid": "1000", "gid": "1000",
    "groups": "1000,27,44", "umask": "0027", "cwd": "/work/dir", "env_FOO": "bar", "CapEff": "0000000020000420",
    "CapPrm": "0000000020000420", "CapBnd": "0000000020000420", "CapAmb": "0000000020000420",
    "CapInh": "0000000020000420", "NoNewPrivs": "1", "Seccomp": "2", "nofile": "512", "root_ro": "yes",
    "tmp_rw": "yes", "masked_keys": "0", "proc_sys_ro": "yes", "dev_null": "c", "dev_zero": "4",
    "dev_custom": "c", "mount_tmp": "tmpfs", "pid1_cmd": "/bin/sh /bin/check.sh ", "mem_limit": str(64 << 20), "pids_max": "50",
    "sysctl_shmmni": "1024", "uid_map": "0 0 4294967295", "seccomp_mkdir": "denied", "net": "lo,",
}


def test_spec_fields_applied_like_runc() -> None:
    cfg = _rich_config()
    ours = run_container(cfg)
    assert ours.status == 0, ours.stderr
    got = ours.kv()
    for key, want in EXPECTED.items():
        assert got.get(key) == want, f"{key}: got {got.get(key)!r}, want {want!r}\n{ours.stdout}"
    theirs = run_runc(cfg)
    assert theirs.status == 0, theirs.stderr
    differ = {k: (v, theirs.kv().get(k)) for k, v in ours.kv().items() if theirs.kv().get(k) != v}
    # runc 1.1.5 predates linux domainname support (runc 1.2 added it)
    assert differ == {"domainname": ("example.test", "(none)")}


def test_missing_executable_is_reported_before_ready() -> None:
    b = Bundle(base_config(["no-such-binary"]))
    try:
        s = Started(b.launch())
        assert s.msg["type"] == "error"
        assert s.msg["kind"] == "NotFoundError"
        assert "no-such-binary" in s.msg["message"]
        assert "[resolve]" in s.msg["message"]
        assert s.wait().status == 1
    finally:
        b.cleanup()


def test_bad_mount_names_the_mount_index() -> None:
    cfg = base_config(["true"])
    cfg["mounts"].append({"destination": "/data", "type": "bind", "source": "/nonexistent/src", "options": ["rbind"]})
    b = Bundle(cfg)
    try:
        s = Started(b.launch())
        assert s.msg["type"] == "error"
        assert f"mounts[{len(cfg['mounts']) - 1}]" in s.msg["message"]
        assert "/nonexistent/src" in s.msg["message"]
        s.wait()
    finally:
        b.cleanup()


def test_eof_before_start_aborts_without_running_user_code(tmp_path: Path) -> None:
    b = Bundle(base_config(["sh", "-c", "echo ran"]))
    try:
        s = Started(b.launch())
        assert s.msg["type"] == "ready"
        s.ctl.close()
        out = os.read(s.out_r, 100)
        assert out == b""
        from tests.linux.harness import wait_pid

        assert wait_pid(s.pid) == 1
    finally:
        b.cleanup()


def test_bind_mount_and_user_namespace_mapping() -> None:
    import shutil
    import tempfile

    src = Path(tempfile.mkdtemp(prefix="rwdata-"))
    src.chmod(0o755)  # reachable by the mapped root (host uid 100000)
    (src / "hello").write_text("hi")
    cfg = base_config(["sh", "-c", "cat /data/hello; echo; cat /proc/self/uid_map; id -u; "
                             "touch /data/x 2>/dev/null && echo rw || echo ro"])
    cfg["mounts"].append({"destination": "/data", "type": "bind", "source": str(src), "options": ["rbind", "ro"]})
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "cgroup"]
    cfg["mounts"] = [m for m in cfg["mounts"] if m["type"] not in ("sysfs", "cgroup")]
    try:
        r = run_container(cfg, owner=100000)
    finally:
        shutil.rmtree(src)
    assert r.status == 0, r.stderr
    lines = r.stdout.split()
    assert lines[0] == "hi"
    assert lines[1:4] == ["0", "100000", "65536"]
    assert lines[4] == "0"
    assert lines[5] == "ro"
