"""The zygote forks real workloads; a subreaper ``Reaper`` collects their exits.

Each scenario runs in a fresh interpreter (``python -c``) because the server side makes its
process a child subreaper, which must not leak into the pytest process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runwasm.shim.common.statefile import process_start_time

ROOT = Path(__file__).resolve().parents[3]
ENTRY = "tests.shim.spawn.test_zygote:_entry"


def _entry(payload: dict[str, Any], fds: dict[str, int]) -> None:
    """Workload entry: report what the process looks like, then exit as told."""
    if payload.get("mode") == "return":
        return
    if payload.get("mode") == "raise":
        raise RuntimeError("entry failed")
    out = fds["out"]
    report = {
        "fds": fds,
        "open": sorted(int(n) for n in os.listdir("/proc/self/fd")),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "sid": os.getsid(0),
        "sigint": signal.getsignal(signal.SIGINT) == signal.SIG_DFL,
        "mask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "extra": os.read(fds["extra"], 100).decode() if "extra" in fds else "",
        "start_time": process_start_time(int(os.readlink("/proc/self"))),
        "log_processes": __import__("logging").logProcesses,
    }
    os.write(out, json.dumps(report).encode())
    os.close(out)
    if payload.get("signal"):
        os.kill(os.getpid(), int(payload["signal"]))
    os._exit(int(payload.get("code", 0)))


async def _scenario(payload: dict[str, Any], pidns: str | None, entry: str, group_log: bool = False,
                    preload: tuple[str, ...] = ()) -> dict[str, Any]:
    from runwasm.shim.spawn.zygote import SpawnError, Zygote
    from tests.shim.serverside import server_side

    shared, reaper = server_side(preload)
    zygote: Zygote = shared
    lr = lw = -1
    if group_log:  # a node server's group: its log FIFO (here a pipe) is the workload's fd 2
        from runwasm.shim.server.group import GroupZygote

        lr, lw = os.pipe()
        zygote = GroupZygote(shared, lw)
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    er, ew = os.pipe()
    os.write(ew, b"extra-data")
    os.close(ew)
    result: dict[str, Any] = {}
    try:
        try:
            with reaper.spawning():
                pid, start_time = await zygote.spawn(entry, payload, {"out": w, "extra": er}, pidns=pidns)
        except SpawnError as err:
            return {"spawn_error": str(err)}
        finally:
            os.close(w)
            os.close(er)
        exited: asyncio.Future[tuple[int, int, int]] = loop.create_future()
        reaper.watch(pid, start_time, lambda p, s, t: exited.set_result((p, s, t)))
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        got_pid, status, when = await asyncio.wait_for(exited, 20)
        result = {"server_pid": os.getpid(), "zygote_pid": zygote.pid, "host_pid": pid, "start_time": start_time, "watched_pid": got_pid, "status": status, "when": when,
                  "report": json.loads(b"".join(chunks)) if chunks else None}
        if group_log:
            os.close(lw)
            lw = -1
            result["log"] = os.read(lr, 1 << 16).decode()
    finally:
        os.close(r)
        for fd in (lr, lw):
            if fd >= 0:
                os.close(fd)
        zygote.close()
        shared.close()
        await asyncio.sleep(0.05)
        reaper.reap()
    return result


def _run(payload: dict[str, Any], pidns: str | None = None, entry: str = ENTRY, group_log: bool = False,
         preload: tuple[str, ...] = ()) -> dict[str, Any]:
    code = ("import asyncio, json, sys; from tests.shim.spawn.test_zygote import _scenario; "
            f"print(json.dumps(asyncio.run(_scenario(json.loads(sys.argv[1]), {pidns!r}, {entry!r}, {group_log!r}, "
            f"{preload!r}))))")
    p = subprocess.run([sys.executable, "-c", code, json.dumps(payload)], cwd=ROOT, capture_output=True,
                       timeout=60, check=False)
    assert p.returncode == 0, p.stderr.decode()
    out: dict[str, Any] = json.loads(p.stdout.decode().strip().splitlines()[-1])
    out["stderr"] = p.stderr.decode()
    return out


def test_spawn_renumbers_fds_and_reports_exit() -> None:
    res = _run({"code": 7})
    rep = res["report"]
    assert rep["fds"] == {"out": 3, "extra": 4}
    assert rep["extra"] == "extra-data"
    assert [fd for fd in rep["open"] if fd > 4] in ([], [5])  # 5: the listdir fd itself, at most
    assert rep["pid"] == res["host_pid"] == res["watched_pid"]
    assert rep["start_time"] == res["start_time"] > 0  # the identity the reaper matches exits by
    assert rep["sid"] == rep["pid"]  # setsid()
    assert rep["sigint"] is True  # dispositions reset (the zygote ignores SIGINT)
    assert rep["mask"] == []
    assert res["status"] == 7
    assert res["when"] > 0


WARMED: list[int] = []


def zygote_warm() -> None:
    """This module's warm hook: the zygote calls it once after importing it as a preload."""
    WARMED.append(os.getpid())


def _warm_entry(payload: dict[str, Any], fds: dict[str, int]) -> None:
    os.write(fds["out"], json.dumps({"warmed": WARMED, "pid": os.getpid()}).encode())
    os._exit(0)


def test_a_preloaded_modules_warm_hook_runs_once_in_the_zygote() -> None:
    """``zygote_warm`` of a preloaded module fills its caches once in the zygote, so every
    workload inherits them (``runwasm.shim.spawn.wasm_workload.zygote_warm``) instead of filling
    them again after each fork."""
    res = _run({}, entry="tests.shim.spawn.test_zygote:_warm_entry", preload=("tests.shim.spawn.test_zygote",))
    assert res["report"]["warmed"] == [res["zygote_pid"]]
    assert res["status"] == 0


def test_the_wasm_workloads_warm_hook_fills_the_caches_it_names() -> None:
    from runwasm.shim.spawn import wasm_workload
    from runwasm.wasm.http_serve import cli_package_dir
    from runwasm.wasm.identity import cpu_fingerprint, wasmtime_version

    for cached in (cli_package_dir, cpu_fingerprint, wasmtime_version):
        cached.cache_clear()
    wasm_workload.zygote_warm()
    assert [f.cache_info().currsize for f in (cli_package_dir, cpu_fingerprint, wasmtime_version)] == [1, 1, 1]


def test_group_log_fd_becomes_the_workloads_fd_2() -> None:
    """A node server hosts many groups: each workload writes its last-resort errors to its own
    group's log FIFO (the named fd ``log``), which its entry never sees among its fds."""
    res = _run({"code": 0}, group_log=True)
    assert res["report"]["fds"] == {"out": 3, "extra": 4}
    assert res["log"] == ""
    res = _run({"mode": "raise"}, group_log=True)
    assert res["status"] == 127
    assert "RuntimeError: entry failed" in res["log"]
    assert "entry failed" not in res["stderr"]  # not the zygote's (the first group's) fd 2


def test_signalled_exit_is_128_plus_signal() -> None:
    assert _run({"signal": int(signal.SIGTERM)})["status"] == 143
    assert _run({"signal": int(signal.SIGKILL)})["status"] == 137


def test_entry_that_returns_exits_zero() -> None:
    res = _run({"mode": "return"})
    assert res["status"] == 0
    assert res["report"] is None


def test_entry_that_raises_exits_127_with_traceback() -> None:
    res = _run({"mode": "raise"})
    assert res["status"] == 127


def test_bad_entry_module() -> None:
    assert _run({}, entry="tests.shim.no_such_module:_entry")["status"] == 127


def test_bad_pidns_path_is_spawn_error() -> None:
    res = _run({}, pidns="/proc/self/ns/does-not-exist")
    assert "spawn_error" in res
    assert "does-not-exist" in res["spawn_error"] or "No such file" in res["spawn_error"]


@pytest.mark.privileged
def test_a_workload_without_pid_namespace_is_forked_once_as_a_child_of_the_server() -> None:
    """One fork (CLONE_PARENT): the workload's parent is the server from its first instruction,
    not the zygote nor an intermediate; its start time is its own, and its exit reaches the
    server's reaper under that identity."""
    res = _run({"code": 4})
    assert res["report"]["ppid"] == res["server_pid"] != res["zygote_pid"]
    assert res["start_time"] == res["report"]["start_time"] > 0
    assert res["watched_pid"] == res["host_pid"] == res["report"]["pid"]
    assert res["status"] == 4


def test_new_pid_namespace_gives_pid_1() -> None:
    res = _run({"code": 3}, pidns="new")
    assert res["report"]["pid"] == 1
    assert res["host_pid"] != 1
    assert res["watched_pid"] == res["host_pid"]
    assert res["status"] == 3


async def _cancelled_spawn_scenario() -> dict[str, Any]:
    """Cancel a spawn while the zygote is forking (an RPC deadline), then spawn again."""
    from tests.shim.serverside import server_side

    zygote, reaper = server_side()
    loop = asyncio.get_running_loop()
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        first = asyncio.create_task(zygote.spawn(ENTRY, {"code": 0}, {"out": w1}))
        await asyncio.sleep(0)  # the request is sent; the reply is not read yet
        first.cancel()
        try:
            await first
        except asyncio.CancelledError:
            pass
        os.close(w1)
        with reaper.spawning():
            pid, start_time = await asyncio.wait_for(zygote.spawn(ENTRY, {"code": 5}, {"out": w2}), 20)
        os.close(w2)
        exited: asyncio.Future[int] = loop.create_future()
        reaper.watch(pid, start_time, lambda p, s, t: exited.set_result(s))
        report = json.loads(os.read(r2, 65536))
        status = await asyncio.wait_for(exited, 20)
        return {"pid": pid, "report_pid": report["pid"], "status": status}
    finally:
        os.close(r1)
        os.close(r2)
        zygote.close()
        await asyncio.sleep(0.05)
        reaper.reap()


def _scenario_in_fresh_process(name: str) -> Any:
    """Run ``asyncio.run(<name>())`` of this module in a fresh interpreter (its zygote and reaper
    are its own) and return what it returned, through JSON."""
    code = (f"import asyncio, json; from tests.shim.spawn.test_zygote import {name}; "
            f"print(json.dumps(asyncio.run({name}())))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def test_cancelled_spawn_does_not_hand_its_pid_to_the_next_spawn() -> None:
    res = _scenario_in_fresh_process("_cancelled_spawn_scenario")
    assert res["pid"] == res["report_pid"]
    assert res["status"] == 5


_SLOW_READ_SCENARIO = """
import json, os, sys, threading, time
from runwasm.shim.spawn import zygote

def reap_all():  # the server: reaps every child as soon as it exits
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.01)

threading.Thread(target=reap_all, daemon=True).start()
r, w = os.pipe()
z = os.fork()
if z == 0:  # the zygote, slow to read the start time (a loaded machine)
    os.close(r)
    real = zygote.process_start_time
    def slow(pid):
        time.sleep(0.5)
        return real(pid)
    zygote.process_start_time = slow
    try:
        got = zygote._spawn_sibling({"entry": "tests.shim.spawn.test_zygote:_entry", "payload": {"mode": "return"},
                                     "names": [], "pidns": None}, [])
        out = {"pid": got.pid, "start_time": got.start_time}
    except zygote.SpawnError as err:
        out = {"error": str(err)}
    os.write(w, json.dumps(out).encode())
    os._exit(0)
os.close(w)
print(os.read(r, 4096).decode())
"""


def test_a_workload_that_exits_at_once_still_gets_its_identity_from_a_slow_zygote() -> None:
    """The sibling workload cannot exit (and be reaped by the server, its pid free for reuse)
    before the zygote has read its start time: it waits for the zygote's go. Before, a workload
    that ran and exited while the zygote was descheduled made the spawn fail."""
    p = subprocess.run([sys.executable, "-c", _SLOW_READ_SCENARIO], cwd=ROOT, capture_output=True, timeout=60,
                       check=False)
    assert p.returncode == 0, p.stderr.decode()
    res = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert "error" not in res, res
    assert res["pid"] > 0
    assert res["start_time"] > 0


async def _zygote_dies_scenario() -> dict[str, Any]:
    """A spawn waiting for its reply when the zygote dies fails (it does not hang), and so does a
    spawn after that; the zygote is stopped first, so the request is surely waiting."""
    from runwasm.shim.spawn.zygote import SpawnError
    from tests.shim.serverside import server_side

    zygote, reaper = server_side()
    out: dict[str, Any] = {}
    try:
        os.kill(zygote.pid, signal.SIGSTOP)
        waiting = asyncio.create_task(zygote.spawn(ENTRY, {"code": 0}, {}))
        await asyncio.sleep(0.05)
        out["waiting"] = not waiting.done()
        os.kill(zygote.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(waiting, 20)
            out["first"] = "spawned"
        except SpawnError as err:
            out["first"] = str(err)
        try:
            await asyncio.wait_for(zygote.spawn(ENTRY, {"code": 0}, {}), 20)
            out["second"] = "spawned"
        except SpawnError as err:
            out["second"] = str(err)
        out["gone"] = zygote.gone()
    finally:
        zygote.close()
        await asyncio.sleep(0.05)
        reaper.reap()
    return out


def test_a_spawn_waiting_when_the_zygote_dies_fails_and_so_do_later_ones() -> None:
    res = _scenario_in_fresh_process("_zygote_dies_scenario")
    assert res["waiting"] is True
    for which in ("first", "second"):  # EOF, or ECONNRESET when the zygote left our request unread
        assert res[which] == "zygote exited" or res[which].startswith("zygote unreachable: "), res
    assert res["gone"] is True


def _later_entry(payload: dict[str, Any], fds: dict[str, int]) -> None:
    os.write(fds["out"], json.dumps({"later": "tests.shim.spawn.later_probe" in sys.modules}).encode())
    os._exit(0)


async def _later_scenario() -> list[bool]:
    from tests.shim.serverside import server_side

    zygote, reaper = server_side(("tests.shim.spawn.slow_preload",), later=("tests.shim.spawn.later_probe",))
    seen = []
    try:
        for delay in (0.0, 1.0):  # the first request arrives while the zygote still imports its preload
            await asyncio.sleep(delay)
            r, w = os.pipe()
            try:
                with reaper.spawning():
                    await zygote.spawn("tests.shim.spawn.test_zygote:_later_entry", {}, {"out": w})
            finally:
                os.close(w)
            seen.append(bool(json.loads(os.read(r, 4096))["later"]))
            os.close(r)
    finally:
        zygote.close()
        await asyncio.sleep(0.05)
        reaper.reap()
    return seen


def test_a_spawn_request_is_served_before_the_later_imports() -> None:
    """``later`` modules (the Linux init, for the server) are imported only while no request
    waits: the first Wasm container after boot does not wait for them; workloads spawned after
    they are in inherit them."""
    assert _scenario_in_fresh_process("_later_scenario") == [False, True]


async def _lazy_scenario(thread: bool, prestart: bool = False) -> dict[str, Any]:
    """A lazily started zygote: none before the first spawn; forked then (or exec'd while this
    process runs a thread); it holds no fd of the server's but its socket and 0-2."""
    import threading

    from tests.shim.serverside import server_side

    held = os.open("/dev/null", os.O_RDONLY)  # a server fd (close-on-exec or not, a fork copies it)
    os.set_inheritable(held, True)
    zygote, reaper = server_side(lazy=True)
    from runwasm.shim.server import logs

    logs.lean_records()  # the server's logging set-up, which a workload must not start from
    before = zygote.pid
    if prestart:  # a Linux container's Create: started before the spawn asks for it
        zygote.prestart()
        prestarted = zygote.pid
        zygote.prestart()  # once only
        assert zygote.pid == prestarted
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait) if thread else None
    if worker is not None:
        worker.start()
    r, w = os.pipe()
    try:
        with reaper.spawning():
            pid, start_time = await zygote.spawn(ENTRY, {}, {"out": w})
        os.close(w)
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[int] = loop.create_future()
        reaper.watch(pid, start_time, lambda p, s, t: exited.set_result(s))
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        status = await asyncio.wait_for(exited, 20)
        zfds = sorted(int(n) for n in os.listdir(f"/proc/{zygote.pid}/fd"))
        cmdline = Path(f"/proc/{zygote.pid}/cmdline").read_bytes().decode(errors="replace")
        return {"before": before, "prestarted": prestarted if prestart else None, "zygote_pid": zygote.pid, "zygote_ppid": int(Path(f"/proc/{zygote.pid}/stat").read_text().rpartition(")")[2].split()[1]),
                "server_pid": os.getpid(), "held": held, "zygote_fds": zfds, "exec": "exec_main" in cmdline,
                "status": status, "report": json.loads(b"".join(chunks))}
    finally:
        stop.set()
        if worker is not None:
            worker.join()
        os.close(r)
        zygote.close()
        await asyncio.sleep(0.05)
        reaper.reap()


@pytest.mark.parametrize(("thread", "prestart"), [(False, False), (True, False), (False, True)],
                         ids=["single-threaded-fork", "threaded-exec", "prestarted"])
def test_a_lazy_zygote_starts_at_the_first_spawn_and_keeps_no_server_fd(thread: bool, prestart: bool) -> None:
    code = ("import asyncio, json; from tests.shim.spawn.test_zygote import _lazy_scenario; "
            f"print(json.dumps(asyncio.run(_lazy_scenario({thread!r}, {prestart!r}))))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr.decode()
    out = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert out["before"] == 0  # nothing forked at start
    if prestart:
        assert out["prestarted"] == out["zygote_pid"] != 0
    assert out["zygote_ppid"] == out["server_pid"]
    assert out["exec"] is thread  # a process running threads is never forked
    assert out["held"] not in out["zygote_fds"]
    assert len(out["zygote_fds"]) == 4  # 0-2 and its socket
    assert out["status"] == 0
    assert out["report"]["ppid"] == out["server_pid"]  # the workload is the server's child either way
    assert out["report"]["sigint"] is True
    assert out["report"]["log_processes"] is True
