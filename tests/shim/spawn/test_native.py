"""The native spawn of Wasm tasks: ``runwasm-wasm-exec`` (``shim/spawn/wasm_exec.c``) spawned by
``shim/spawn/native.py`` confines, reports and execs as the Python workload does.

The helper is spawned for real (root: it switches credentials), with ``/bin/sh`` in place of
``wasmtime-min`` so that the process it leaves behind can describe itself; which tasks take this
route and that they run the same under the real shim is in
``tests/shim/e2e/test_credentials_e2e.py``.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from runwasm.oci.runtime_spec import parse_process
from runwasm.shim.spawn import native
from runwasm.shim.spawn.wasm_workload import after_exec_sets

pytestmark = pytest.mark.privileged

NOBODY = 65534


@pytest.fixture(autouse=True)
def _helper() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("the helper switches credentials: needs root")
    if native.helper_path() is None:
        pytest.fail("runwasm-wasm-exec is not built: make setup compiles it (gcc, from scripts/install-system.sh)")
    return


class Spawned:
    """A helper spawned with ``/bin/sh -c SCRIPT`` as its program; its stdout/stderr are pipes."""

    def __init__(self, script: str, confine: list[str], extra: list[str] = (), owned: tuple[int, ...] = ()) -> None:
        self.ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.out_r, out_w = os.pipe()
        self.err_r, err_w = os.pipe()
        sh = self.sh = os.open("/bin/sh", os.O_PATH | os.O_CLOEXEC)
        named = {"control": theirs.fileno(), "stdout": out_w, "stderr": err_w}
        argv = [native.HELPER, "-c", str(theirs.fileno()), "-x", str(sh), "-w", "test.wasm", *confine, *extra,
                "-1", str(out_w), "-2", str(err_w), "--", "sh", "-c", script]
        plan = native.NativePlan(argv, {"PATH": "/usr/bin:/bin"}, [sh, *owned], "test.wasm")
        try:
            self.pid = native.spawn(plan, named).pid
        finally:
            theirs.close()
            os.close(out_w)
            os.close(err_w)

    def message(self) -> dict[str, Any]:
        self.ours.settimeout(30)
        data = self.ours.recv(65536)
        return json.loads(data) if data else {}

    def start(self) -> None:
        self.ours.send(json.dumps({"type": "start"}).encode())

    def finish(self) -> tuple[int, str, str]:
        self.ours.close()
        _pid, status = os.waitpid(self.pid, 0)
        out = _read_all(self.out_r)
        err = _read_all(self.err_r)
        return os.waitstatus_to_exitcode(status), out, err


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


def _proc(**process: Any) -> Any:
    return parse_process({"args": ["/x.wasm"], "cwd": "/", **process}, source="test")


def _status(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


CAPS = {"bounding": ["CAP_NET_BIND_SERVICE", "CAP_KILL"], "effective": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "permitted": ["CAP_NET_BIND_SERVICE", "CAP_KILL"], "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"]}


@pytest.mark.parametrize("nnp", [True, False], ids=["noNewPrivileges", "no-noNewPrivileges"])
@pytest.mark.parametrize(("user", "caps"), [
    ({"uid": NOBODY, "gid": NOBODY, "additionalGids": [4321, 4322], "umask": 0o027}, CAPS),
    ({"uid": 0, "gid": 0}, {**CAPS, "ambient": []}),
    ({"uid": 0, "gid": 0}, None),
], ids=["nobody-with-ambient", "root-with-caps", "root-no-caps-in-spec"])
def test_helper_confines_then_execs_only_after_start(user: dict[str, Any], caps: dict[str, Any] | None,
                                                    nnp: bool) -> None:
    """The process the helper leaves has the spec's ids, groups, umask, capability sets (what runc's
    execve leaves: ``after_exec_sets``), bounding set, noNewPrivileges, oomScoreAdj and rlimits;
    a new session; only fds 0-2; and it ran nothing before ``start``."""
    proc = _proc(user=user, noNewPrivileges=nnp, oomScoreAdj=567,
                 rlimits=[{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}],
                 **({"capabilities": caps} if caps is not None else {}))
    confine = native._confinement_args(proc)
    assert confine is not None
    script = ("cat /proc/self/status; echo oom=$(cat /proc/self/oom_score_adj); echo sid=$(cut -d' ' -f6 /proc/self/stat);"
              " grep 'Max open files' /proc/self/limits; ls -l /proc/self/fd")
    s = Spawned(script, confine)
    with pytest.raises(OSError):  # the plan's fds (here the program's O_PATH fd) are closed after the spawn
        os.fstat(s.sh)
    ready = s.message()
    assert ready == {"type": "ready", "pid": s.pid}
    s.start()
    code, out, err = s.finish()
    assert (code, err) == (0, "")
    st = _status(out)
    uid, gid = user["uid"], user["gid"]
    assert st["Uid"].split() == [str(uid)] * 4
    assert st["Gid"].split() == [str(gid)] * 4
    assert st["Groups"].split() == [str(g) for g in user.get("additionalGids", [])]
    assert st["Umask"] == f"{user.get('umask', 0o022):04o}"
    assert st["NoNewPrivs"] == ("1" if nnp else "0")
    sets = after_exec_sets(proc)
    if sets is None:  # root without capabilities in the spec keeps what it had (the server's)
        assert int(st["CapEff"], 16) == int(_status(Path("/proc/self/status").read_text())["CapEff"], 16)
    else:
        # the shell is exec'd like wasmtime-min: a root process regains its permitted set then
        assert int(st["CapPrm"], 16) == sets[1]
        assert int(st["CapInh"], 16) == sets[2]
    if caps is not None:
        assert int(st["CapBnd"], 16) == (1 << 10) | (1 << 5)
        assert int(st["CapAmb"], 16) == (1 << 10 if caps["ambient"] else 0)
    assert "oom=567" in out
    assert f"sid={s.pid}" in out
    limits = next(x for x in out.splitlines() if x.startswith("Max open files"))
    assert limits.split()[3:5] == ["123", "456"]
    fds = [x.split()[-3] for x in out.splitlines() if " -> " in x]
    assert fds == ["0", "1", "2", "3"], out  # 3: ls's own directory


@pytest.mark.parametrize("nnp", [True, False], ids=["noNewPrivileges", "no-noNewPrivileges"])
def test_the_seccomp_filter_is_loaded_last_and_admin_is_not_kept(nnp: bool) -> None:
    """``linux.seccomp`` compiled by the server (``_filter``) is loaded after ``start``, right
    before the exec; without noNewPrivileges CAP_SYS_ADMIN is held until then and dropped after."""
    proc = _proc(user={"uid": NOBODY, "gid": NOBODY}, noNewPrivileges=nnp,
                 capabilities={**CAPS, "ambient": ["CAP_NET_BIND_SERVICE"]})
    doc = {"defaultAction": "SCMP_ACT_ALLOW",
           "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    owned: list[int] = []
    extra = native._filter(doc, proc, owned)
    assert extra is not None
    assert extra[:2] == ["-F", str(owned[0])]
    assert ("-a" in extra) is not nnp
    s = Spawned("mkdir /tmp/runwasm-native-seccomp-$$ 2>&1; echo rc=$?; cat /proc/self/status",
                [*(native._confinement_args(proc) or []), *extra], owned=tuple(owned))
    assert s.message()["type"] == "ready"
    s.start()
    code, out, err = s.finish()
    assert (code, err) == (0, "")
    assert "Operation not permitted" in out
    assert "rc=1" in out
    st = _status(out)
    assert st["Seccomp"] == "2"
    for key in ("CapEff", "CapPrm", "CapAmb"):  # no CAP_SYS_ADMIN left: only the ambient set
        assert int(st[key], 16) == 1 << 10, (key, st[key])


def test_eof_before_start_exits_without_running_anything() -> None:
    s = Spawned("echo ran", native._confinement_args(_proc()) or [])
    assert s.message()["type"] == "ready"
    code, out, _err = s.finish()  # closes the control socket: the shim aborts the Create
    assert (code, out) == (1, "")


def test_setup_failure_is_reported_as_the_workload_reports_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "tasks"
    s = Spawned("echo ran", [*(native._confinement_args(_proc()) or []), "-j", str(missing)])
    msg = s.message()
    assert msg["type"] == "error"
    assert msg["kind"] == "SetupError"
    assert msg["status"] == "internal"
    assert msg["message"] == f"failed to join cgroup: writing to '{missing}': [errno 2] No such file or directory"
    code, out, _err = s.finish()
    assert (code, out) == (1, "")


def _check_args(root: Path, name: str, st: os.stat_result | None = None) -> tuple[list[str], int]:
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    st = st or os.stat(root / name)
    return ["-o", f"{fd}:{st.st_dev}:{st.st_ino}", "-P", name, "-H", str(root / name)], fd


@pytest.mark.parametrize(("mode", "owner", "expected"), [
    (0o600, 0, ("ModulePermissionError", "permission_denied",
                "failed to open module '{path}' as uid 65534 gid 65534 groups [4321]: Permission denied")),
    (0o644, 0, None),
    (0o600, NOBODY, None),
], ids=["root-only", "world-readable", "the-users-own"])
def test_module_is_opened_with_the_containers_credentials(tmp_path: Path, mode: int, owner: int,
                                                          expected: tuple[str, str, str] | None) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    os.chmod(tmp_path, 0o700)  # only the components inside the rootfs are checked
    os.chmod(root, 0o755)
    (root / "m.wasm").write_bytes(b"\0asm\1\0\0\0")
    os.chown(root / "m.wasm", owner, owner)
    os.chmod(root / "m.wasm", mode)
    check, fd = _check_args(root, "m.wasm")
    user = {"uid": NOBODY, "gid": NOBODY, "additionalGids": [4321]}
    s = Spawned("echo ran", [*(native._confinement_args(_proc(user=user)) or []), *check], owned=(fd,))
    msg = s.message()
    if expected is None:
        assert msg["type"] == "ready"
        s.start()
        assert s.finish()[:2] == (0, "ran\n")
        return
    kind, status, text = expected
    assert msg == {"type": "error", "kind": kind, "status": status, "message": text.format(path=root / "m.wasm")}
    assert s.finish()[:2] == (1, "")


def test_a_module_replaced_after_the_plan_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.wasm").write_bytes(b"\0asm\1\0\0\0")
    planned = os.stat(tmp_path / "m.wasm")
    os.rename(tmp_path / "m.wasm", tmp_path / "old.wasm")
    (tmp_path / "m.wasm").write_bytes(b"\0asm\1\0\0\0")
    check, fd = _check_args(tmp_path, "m.wasm", planned)
    s = Spawned("echo ran", [*(native._confinement_args(_proc()) or []), *check], owned=(fd,))
    msg = s.message()
    assert (msg["kind"], msg["status"]) == ("InvalidModuleError", "invalid_argument")
    assert "replaced" in msg["message"]
    assert s.finish()[:2] == (1, "")


WASM = {"task": {"rootfs": "/nonexistent", "args": ["/x.wasm"]}, "process": {"args": ["/x.wasm"], "cwd": "/"}}


@pytest.mark.parametrize(("change", "named", "kw"), [
    # a profile that denies what wasmtime-min's exec needs: the zygote's route decides (in process)
    ({"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                  "syscalls": [{"names": ["execve", "execveat"], "action": "SCMP_ACT_ERRNO"}]}}, {}, {}),
    ({"memoryPolicy": {"mode": "MPOL_BIND", "nodes": "0"}}, {}, {}),
    ({}, {"steps": 9}, {}),
    ({}, {"trace": 9}, {}),
    ({}, {"rootns": 9}, {}),
    ({}, {}, {"pidns": "new"}),
    ({}, {}, {"pty": True}),
    ({"process": {"args": ["/x.wasm"], "cwd": "/", "scheduler": {"policy": "SCHED_OTHER"}}}, {}, {}),
    ({"process": {"args": ["/x.wasm"], "cwd": "/", "ioPriority": {"class": "IOPRIO_CLASS_IDLE"}}}, {}, {}),
    ({"process": {"args": ["/x.wasm"], "cwd": "/", "apparmorProfile": "p"}}, {}, {}),
    ({"process": {"args": ["/x.wasm"], "cwd": "/", "rlimits": [{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}]}}, {}, {}),
    ({}, {}, {}),  # the module cannot be read: the zygote's route reports that
], ids=["seccomp-denying-the-exec", "memoryPolicy", "steps", "trace", "private-rootfs", "pidns", "pty", "scheduler", "ioPriority",
        "apparmor", "unknown-rlimit", "no-module"])
def test_what_the_helper_does_not_do_takes_the_zygotes_route(change: Mapping[str, Any], named: Mapping[str, int],
                                                              kw: Mapping[str, Any]) -> None:
    payload = {**WASM, **change}
    assert native.plan(native.WASM_ENTRY, payload, {"control": 5, **named}, **kw) is None


def test_other_workloads_and_a_disabled_helper_take_the_zygotes_route(monkeypatch: pytest.MonkeyPatch) -> None:
    assert native.plan("runwasm.linux.init:main", WASM, {"control": 5}) is None
    monkeypatch.setattr(native, "_helper", None)
    monkeypatch.setenv(native.HELPER_ENV, "off")
    assert native.helper_path() is None
    monkeypatch.setattr(native, "_helper", None)
    monkeypatch.setenv(native.HELPER_ENV, "/nonexistent/helper")
    assert native.helper_path() is None
    monkeypatch.setattr(native, "_helper", None)
    monkeypatch.delenv(native.HELPER_ENV)
    assert native.helper_path() is not None
    assert stat.S_ISREG(os.stat(native.helper_path() or "").st_mode)


@pytest.mark.parametrize(("config", "wasm"), [
    ({"process": {"args": ["/hello.wasm"]}}, True), ({"process": {"args": ["/bin/sh"]}}, False),
    ({"process": {"args": []}}, True), ({}, True), (None, True), ("{not json", True),
    ("[" * 100_000 + "]" * 100_000, True), ({"process": {"args": "/bin/sh"}}, False), ([1], True),
], ids=["wasm", "linux", "no-args", "no-process", "no-config", "bad-json", "deep-json", "args-a-string", "a-list"])
def test_the_first_container_decides_whether_the_zygote_starts_with_the_server(
        tmp_path: Path, config: Any, wasm: bool) -> None:
    if isinstance(config, str):
        (tmp_path / "config.json").write_text(config)
    elif config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    assert native.bundle_looks_wasm(str(tmp_path)) is wasm
