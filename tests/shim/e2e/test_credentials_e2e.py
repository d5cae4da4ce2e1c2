"""A Wasm task runs with the spec's credentials: process.user, capabilities, noNewPrivileges,
rlimits, oomScoreAdj, linux.seccomp (through the real shim binary, harness as containerd).

The files the guest reads sit in a rootfs inside the harness's 0700 state directory: only the
container's own view (the rootfs and below) is checked against the container's user.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runwasm.shim.harness.driver import Harness, run_task
from runwasm.shim.ttrpc.status import Code, RpcError
from tests.shim.e2e import helpers as e
from tests.shim.e2e.helpers import run

NOBODY = 65534
NO_CAPS = {k: [] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
WASI_EACCES, WASI_EPERM = 2, 63


def _config(args: list[str], user: dict[str, Any] | None = None, **process: Any) -> dict[str, Any]:
    linux = process.pop("linux", None)
    doc: dict[str, Any] = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                           "process": {"args": args, "cwd": "/", "env": ["PATH=/bin"],
                                       "user": user if user is not None else {"uid": NOBODY, "gid": NOBODY},
                                       "capabilities": NO_CAPS, **process}}
    if linux is not None:
        doc["linux"] = linux
    return doc


def _bundle(h: Harness, cid: str, config: dict[str, Any] | str, module: str) -> Path:
    bundle = e.raw_bundle(h, cid, config, {module: e.wasm(module).read_bytes()})
    rootfs = bundle / "rootfs"
    os.chmod(rootfs, 0o755)
    (rootfs / "secret").write_text("secret\n")
    os.chmod(rootfs / "secret", 0o600)
    (rootfs / "public").write_text("public\n")
    os.chmod(rootfs / "public", 0o644)
    (rootfs / "group").write_text("group\n")
    os.chown(rootfs / "group", 0, 4321)
    os.chmod(rootfs / "group", 0o640)
    (rootfs / "nobodys").write_text("nobodys\n")
    os.chown(rootfs / "nobodys", NOBODY, NOBODY)
    os.chmod(rootfs / "nobodys", 0o600)
    (rootfs / "tmp").mkdir()
    os.chmod(rootfs / "tmp", 0o1777)
    return bundle


async def _run(h: Harness, cid: str, bundle: Path) -> tuple[int, str, str]:
    out, err = h.root / f"{cid}.out", h.root / f"{cid}.err"
    ofd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o644)
    efd = os.open(err, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        result = await run_task(h, cid, bundle, stdout=ofd, stderr=efd)
    finally:
        os.close(ofd)
        os.close(efd)
    return result.exit_status, out.read_text(), err.read_text()


ROOT = {"uid": 0, "gid": 0}
NOBODY_USER = {"uid": NOBODY, "gid": NOBODY}
DAC = {"bounding": ["CAP_DAC_OVERRIDE"], "effective": ["CAP_DAC_OVERRIDE"], "permitted": ["CAP_DAC_OVERRIDE"],
       "inheritable": [], "ambient": []}


@pytest.mark.parametrize(("path", "user", "caps", "expected"), [
    ("/secret", NOBODY_USER, NO_CAPS, (100 + WASI_EACCES, "")),
    ("/public", NOBODY_USER, NO_CAPS, (0, "public\n")),
    ("/nobodys", NOBODY_USER, NO_CAPS, (0, "nobodys\n")),
    ("/group", NOBODY_USER, NO_CAPS, (100 + WASI_EACCES, "")),
    ("/group", {**NOBODY_USER, "additionalGids": [4321]}, NO_CAPS, (0, "group\n")),
    ("/nobodys", ROOT, NO_CAPS, (100 + WASI_EACCES, "")),  # root without CAP_DAC_OVERRIDE
    ("/nobodys", ROOT, DAC, (0, "nobodys\n")),
    # a non-root process keeps only its ambient capabilities across runc's execve; so does the guest
    ("/secret", NOBODY_USER, DAC, (100 + WASI_EACCES, "")),
    ("/secret", NOBODY_USER, {**DAC, "inheritable": ["CAP_DAC_OVERRIDE"], "ambient": ["CAP_DAC_OVERRIDE"]},
     (0, "secret\n")),
    # root gets its bounding set (the file counts as fully capable)
    ("/nobodys", ROOT, {**NO_CAPS, "bounding": ["CAP_DAC_OVERRIDE"]}, (0, "nobodys\n")),
], ids=["root-only-file", "world-readable", "own-file", "group-file-no-groups", "group-file-additional-gid",
        "root-without-caps", "root-with-dac-override", "nobody-with-dac-override", "nobody-with-ambient-dac-override",
        "root-with-bounding-dac-override"])
def test_guest_reads_files_as_the_spec_user(path: str, user: dict[str, Any], caps: dict[str, Any],
                                            expected: tuple[int, str]) -> None:
    async def body(h: Harness) -> None:
        bundle = _bundle(h, "rd", _config(["/readfile.wasm", path], user, capabilities=caps), "readfile.wasm")
        status, out, err = await _run(h, "rd", bundle)
        assert (status, out) == expected, err

    run(False, body)


@pytest.mark.parametrize(("user", "owner"), [(NOBODY_USER, 0), (ROOT, NOBODY)], ids=["nobody", "root-without-caps"])
def test_module_the_user_cannot_read_fails_create_with_permission_denied(user: dict[str, Any], owner: int) -> None:
    async def body(h: Harness) -> None:
        bundle = _bundle(h, "perm", _config(["/hello.wasm"], user), "hello.wasm")
        os.chown(bundle / "rootfs" / "hello.wasm", owner, owner)
        os.chmod(bundle / "rootfs" / "hello.wasm", 0o600)
        async with e.shim(h, "perm", bundle) as t:
            with pytest.raises(RpcError) as err:
                await e.create(t, "perm", bundle)
            assert err.value.code == Code.PERMISSION_DENIED, err.value.message
            assert "hello.wasm" in err.value.message
            assert f"uid {user['uid']}" in err.value.message
            await e.shutdown(t, "perm")

    run(False, body)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_the_guest_creates_belong_to_the_user_and_follow_umask(umask: int) -> None:
    async def body(h: Harness) -> None:
        user = {"uid": NOBODY, "gid": NOBODY, "umask": umask}
        bundle = _bundle(h, "wr", _config(["/writefile.wasm", "/tmp/out"], user), "writefile.wasm")
        status, _, _ = await _run(h, "wr", bundle)
        assert status == 0
        st = (bundle / "rootfs" / "tmp" / "out").stat()
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
        assert stat.S_IMODE(st.st_mode) == 0o666 & ~umask
        status, _, _ = await _run(h, "wr2", _retarget(bundle, h, "wr2", "/out"))
        assert status == 100 + WASI_EACCES  # the rootfs root is root's 0755: no create there

    run(False, body)


def _retarget(bundle: Path, h: Harness, cid: str, path: str) -> Path:
    import json

    config = json.loads((bundle / "config.json").read_text())
    config["process"]["args"][1] = path
    return _bundle(h, cid, config, config["process"]["args"][0].lstrip("/"))


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


@pytest.mark.parametrize("nnp", [True, False], ids=["noNewPrivileges", "no-noNewPrivileges"])
def test_running_guest_has_the_spec_credentials_limits_and_filter(nnp: bool) -> None:
    async def body(h: Harness) -> None:
        caps = {"bounding": ["CAP_NET_BIND_SERVICE", "CAP_KILL"], "effective": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
                "permitted": ["CAP_NET_BIND_SERVICE", "CAP_KILL"], "inheritable": ["CAP_NET_BIND_SERVICE"],
                "ambient": ["CAP_NET_BIND_SERVICE"]}
        seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
        config = _config(["/sleep.wasm"], {"uid": NOBODY, "gid": NOBODY, "additionalGids": [4321, 4322],
                                            "umask": 0o027},
                         capabilities=caps, noNewPrivileges=nnp, oomScoreAdj=567,
                         rlimits=[{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}],
                         linux={"seccomp": seccomp})
        bundle = _bundle(h, "ps", config, "sleep.wasm")
        async with e.shim(h, "ps", bundle) as t:
            io = e.stdio(h, "ps")
            pid = await e.create(t, "ps", bundle, io)
            waiter = asyncio.create_task(e.wait(t, "ps"))
            await e.start(t, "ps")
            await io.wait_output("sleeping\n")
            st = _status(pid)
            assert st["Uid"].split() == [str(NOBODY)] * 4
            assert st["Gid"].split() == [str(NOBODY)] * 4
            assert st["Groups"].split() == ["4321", "4322"]
            assert st["Umask"] == "0027"
            assert st["NoNewPrivs"] == ("1" if nnp else "0")
            # non-root after runc's execve: the ambient set only (CAP_NET_BIND_SERVICE, not CAP_KILL)
            for key in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
                assert int(st[key], 16) == 1 << 10, (key, st[key])
            assert int(st["CapBnd"], 16) == (1 << 10) | (1 << 5)  # + CAP_KILL
            assert st["Seccomp"] == "2"
            assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "567"
            limits = [x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max open files")]
            assert limits[0].split()[3:5] == ["123", "456"]
            await e.kill(t, "ps", 9)
            assert (await asyncio.wait_for(waiter, 15)).exit_status == 137
            await io.finish()
            await e.delete(t, "ps")
            await e.shutdown(t, "ps")

    run(False, body)


@pytest.mark.parametrize("nnp", [True, False], ids=["noNewPrivileges", "no-noNewPrivileges"])
def test_seccomp_filter_applies_to_the_guest(nnp: bool) -> None:
    async def body(h: Harness) -> None:
        seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["openat", "openat2", "open"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
        config = _config(["/readfile.wasm", "/public"], noNewPrivileges=nnp, linux={"seccomp": seccomp})
        status, out, err = await _run(h, "sc", _bundle(h, "sc", config, "readfile.wasm"))
        assert (status, out) == (100 + WASI_EPERM, ""), err

    run(False, body)


@pytest.mark.parametrize(("seccomp", "needle"), [
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mmap"], "action": "SCMP_ACT_ERRNO"}]},
     "mmap (SCMP_ACT_ERRNO)"),
    ({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                   {"names": ["clone"], "action": "SCMP_ACT_KILL"}]},
     "clone3 (SCMP_ACT_ERRNO errno 38, and its fallback clone is not allowed either)"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]},
     "futex (SCMP_ACT_ERRNO)"),
], ids=["mmap-denied", "no-threads", "allowlist-too-small"])
def test_seccomp_filter_that_breaks_the_runtime_fails_create(seccomp: dict[str, Any], needle: str) -> None:
    async def body(h: Harness) -> None:
        bundle = _bundle(h, "bad", _config(["/hello.wasm"], noNewPrivileges=True, linux={"seccomp": seccomp}),
                         "hello.wasm")
        async with e.shim(h, "bad", bundle) as t:
            with pytest.raises(RpcError) as err:
                await e.create(t, "bad", bundle)
            assert err.value.code == Code.INVALID_ARGUMENT, err.value.message
            assert "linux.seccomp" in err.value.message
            assert needle in err.value.message
            await e.shutdown(t, "bad")

    run(False, body)


def test_seccomp_allowlist_with_thread_clone_rule_runs() -> None:
    """A deny-by-default profile in the shape of Docker's (clone3 answered ENOSYS, clone allowed
    only without namespace flags) leaves the runtime what it needs."""
    from runwasm.wasm.confine import RUNTIME_SYSCALLS

    names = sorted({n.name for n in RUNTIME_SYSCALLS} - {"clone3"} | {"openat", "openat2", "newfstatat", "statx",
                                                                      "lseek", "ioctl", "getrandom", "prctl",
                                                                      "sched_getaffinity", "rseq", "set_robust_list",
                                                                      "sched_yield", "pread64"})
    seccomp = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "syscalls": [
        {"names": names, "action": "SCMP_ACT_ALLOW"},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}]}

    async def body(h: Harness) -> None:
        config = _config(["/readfile.wasm", "/public"], noNewPrivileges=True, linux={"seccomp": seccomp})
        status, out, err = await _run(h, "dk", _bundle(h, "dk", config, "readfile.wasm"))
        assert (status, out) == (0, "public\n"), err

    run(False, body)


@pytest.mark.parametrize("with_exec", [True, False], ids=["exec-allowed", "no-execve"])
def test_seccomp_allowlist_decides_between_wasmtime_min_and_in_process(with_exec: bool) -> None:
    """The filter is loaded before the exec of wasmtime-min: an allow-list with ``EXEC_SYSCALLS``
    runs the task under it; one without ``execve`` (enough for wasmtime-py) runs it in process,
    and the shim's log says why, naming the syscalls."""
    from runwasm.wasm.confine import EXEC_SYSCALLS, RUNTIME_SYSCALLS

    needs = EXEC_SYSCALLS if with_exec else RUNTIME_SYSCALLS
    names = sorted({n.name for n in needs} | {"openat", "newfstatat", "statx", "lseek", "ioctl", "getrandom",
                                              "prctl", "sched_getaffinity", "rseq", "set_robust_list", "pread64"})
    seccomp = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
               "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]}

    async def body(h: Harness) -> None:
        config = _config(["/readfile.wasm", "/public"], noNewPrivileges=True, linux={"seccomp": seccomp})
        bundle = _bundle(h, "ex", config, "readfile.wasm")
        status, out, err = await _run(h, "ex", bundle)
        assert (status, out) == (0, "public\n"), err
        if with_exec:
            await asyncio.sleep(0.2)  # let the harness drain the log FIFO
            assert "runs in process" not in (bundle / "shim.log").read_text()
        else:
            await e.log_with(bundle / "shim.log", "runs in process (wasmtime-py): linux.seccomp denies execveat")

    run(False, body)


def _count_native_spawns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Point the shims this test starts at a wrapper of the real ``runwasm-wasm-exec`` that counts
    its spawns; returns the counter."""
    from runwasm.shim.spawn import native

    helper = native.helper_path()
    assert helper is not None, "make setup builds runwasm-wasm-exec"
    mark = tmp_path / "spawned"
    wrapper = tmp_path / "wasm-exec"
    wrapper.write_text(f'#!/bin/sh\necho "$$" >> {mark}\nexec {helper} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv(native.HELPER_ENV, str(wrapper))
    return lambda: len(mark.read_text().splitlines()) if mark.exists() else 0


@pytest.mark.parametrize("nnp", [True, False], ids=["noNewPrivileges", "no-noNewPrivileges"])
def test_a_module_with_a_verdict_is_spawned_without_the_zygote_and_confined_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nnp: bool) -> None:
    """Once a task of a module has left its link-check verdict, the next one is planned by the
    server and spawned as ``runwasm-wasm-exec`` (``shim/spawn/native.py``; a wrapper counts its
    spawns): that guest has the spec's user, groups, umask, capabilities (CAP_SYS_ADMIN, held for
    the filter without noNewPrivileges, is gone), noNewPrivileges, oomScoreAdj, rlimits and
    seccomp filter, and a module its user cannot read still fails Create with
    PERMISSION_DENIED, as on the zygote's route."""
    spawned = _count_native_spawns(tmp_path, monkeypatch)

    async def body(h: Harness) -> None:
        first = _bundle(h, "first", _config(["/sleep.wasm"], ROOT), "sleep.wasm")
        async with e.shim(h, "first", first) as t:  # leaves the verdict (if no earlier test did)
            io = e.stdio(h, "first")
            await e.create(t, "first", first, io)
            waiter = asyncio.create_task(e.wait(t, "first"))
            await e.start(t, "first")
            await io.wait_output("sleeping\n")
            await e.kill(t, "first", 9)
            assert (await asyncio.wait_for(waiter, 15)).exit_status == 137
            await io.finish()
            await e.delete(t, "first")
            await e.shutdown(t, "first")

        before = spawned()
        caps = {"bounding": ["CAP_NET_BIND_SERVICE", "CAP_KILL"], "effective": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
                "permitted": ["CAP_NET_BIND_SERVICE", "CAP_KILL"], "inheritable": ["CAP_NET_BIND_SERVICE"],
                "ambient": ["CAP_NET_BIND_SERVICE"]}
        seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
        config = _config(["/sleep.wasm"], {"uid": NOBODY, "gid": NOBODY, "additionalGids": [4321], "umask": 0o027},
                         capabilities=caps, noNewPrivileges=nnp, oomScoreAdj=321,
                         rlimits=[{"type": "RLIMIT_NOFILE", "soft": 77, "hard": 88}], linux={"seccomp": seccomp})
        bundle = _bundle(h, "native", config, "sleep.wasm")
        async with e.shim(h, "native", bundle) as t:
            io = e.stdio(h, "native")
            pid = await e.create(t, "native", bundle, io)
            assert spawned() == before + 1
            waiter = asyncio.create_task(e.wait(t, "native"))
            await e.start(t, "native")
            await io.wait_output("sleeping\n")
            st = _status(pid)
            assert Path(f"/proc/{pid}/exe").resolve().name.startswith("wasmtime-min")
            assert st["Uid"].split() == [str(NOBODY)] * 4
            assert st["Gid"].split() == [str(NOBODY)] * 4
            assert st["Groups"].split() == ["4321"]
            assert st["Umask"] == "0027"
            assert st["NoNewPrivs"] == ("1" if nnp else "0")
            assert st["Seccomp"] == "2"
            for key in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
                assert int(st[key], 16) == 1 << 10, (key, st[key])
            assert int(st["CapBnd"], 16) == (1 << 10) | (1 << 5)
            assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "321"
            limits = [x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max open files")]
            assert limits[0].split()[3:5] == ["77", "88"]
            await e.kill(t, "native", 9)
            assert (await asyncio.wait_for(waiter, 15)).exit_status == 137
            await io.finish()
            await e.delete(t, "native")
            await e.shutdown(t, "native")

        denied = _bundle(h, "denied", _config(["/sleep.wasm"], NOBODY_USER), "sleep.wasm")
        os.chmod(denied / "rootfs" / "sleep.wasm", 0o600)
        async with e.shim(h, "denied", denied) as t:
            with pytest.raises(RpcError) as err:
                await e.create(t, "denied", denied)
            assert spawned() == before + 2
            assert err.value.code == Code.PERMISSION_DENIED, err.value.message
            assert "sleep.wasm" in err.value.message
            assert f"uid {NOBODY}" in err.value.message
            await e.shutdown(t, "denied")

    run(False, body)


def test_a_read_only_rootfs_stays_read_only_on_the_native_route(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``root.readonly``: the server makes the rootfs preopen a read-only mount clone for a
    natively spawned task, as the Python workload does; a writable root still takes writes."""
    spawned = _count_native_spawns(tmp_path, monkeypatch)

    async def body(h: Harness) -> None:
        results = []
        for cid, readonly in (("ro1", True), ("ro2", True), ("rw", False)):
            config = _config(["/writefile.wasm", "/tmp/out"], ROOT)
            config["root"]["readonly"] = readonly
            before = spawned()
            bundle = _bundle(h, cid, config, "writefile.wasm")
            status, _, _ = await _run(h, cid, bundle)
            # a refused write exits 100 + WASI's EROFS, which wasmtime-min reports as 1 (min_run)
            results.append((cid, status != 0, (bundle / "rootfs" / "tmp" / "out").exists(), spawned() - before))
        # ro1 may be the module's first task (the zygote's route, which leaves the verdict)
        assert results[0][1:3] == (True, False)
        assert results[1:] == [("ro2", True, False, 1), ("rw", False, True, 1)]

    run(False, body)
