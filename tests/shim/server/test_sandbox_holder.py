"""The pod's namespace holder, launched for real through a zygote (``ZygoteHolderLauncher``): it
joins the given network namespace, holds new IPC/UTS/pid namespaces with the pod's hostname and
sysctls, lives in its cgroup, and a failed set-up is an InvalidArgument that leaves no process and
no cgroup behind. Needs root (namespaces, cgroups); each scenario runs in a process of its own
(it becomes a child subreaper, like the server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
CGROUP_ROOT = Path("/sys/fs/cgroup")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and cgroups")


def _ns(pid: int | str, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def _in_ns(pid: int, flag: str, *argv: str) -> str:
    return subprocess.run(["nsenter", "-t", str(pid), flag, *argv], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


async def _scenario(tmp: str, netns: str, cgroup: str, mode: str) -> dict[str, Any]:
    import asyncio
    import signal

    from runwasm.shim.common.errors import status_of
    from runwasm.shim.server.sandbox import HolderSpec
    from runwasm.shim.server.sandbox_holder import ZygoteHolderLauncher
    from tests.shim.serverside import server_side

    zygote, reaper = server_side()
    launcher = ZygoteHolderLauncher(zygote, reaper)
    exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    sysctl = "net.ipv4.ip_unprivileged_port_start" if mode == "ok" else "net.ipv4.no_such_sysctl"
    spec = HolderSpec(sandbox_id="sbx1", bundle=tmp, cgroup_path=cgroup, netns_path=netns, new_pidns=True,
                      unshare_ipc=True, unshare_uts=True, hostname="holder-test", sysctls=((sysctl, "81"),))
    out: dict[str, Any] = {}
    try:
        pid = await launcher.launch(spec, lambda status, _at: exited.set_result(status))
    except Exception as err:  # noqa: BLE001 - the scenario reports the status
        out["error"] = (status_of(err), str(err))
        out["status"] = await asyncio.wait_for(exited, 30)  # the holder exits after reporting the error
        return out
    out["pid"] = pid
    out["ns"] = {k: _ns(pid, k) for k in ("net", "ipc", "uts", "pid")}
    out["nspid"] = [ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("NSpid:")]
    out["hostname"] = _in_ns(pid, "-u", "hostname")
    out["sysctl"] = _in_ns(pid, "-n", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start")
    out["cgroup"] = Path(f"/proc/{pid}/cgroup").read_text()
    out["privileges"] = {k: v.strip() for k, v in (ln.split(":", 1) for ln in
                         Path(f"/proc/{pid}/status").read_text().splitlines())
                         if k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")}
    out["recorded"] = (Path(tmp) / "wasm-state.json").exists()
    launcher.signal(pid, signal.SIGTERM)
    out["status"] = await asyncio.wait_for(exited, 30)
    launcher.release(pid)
    out["recorded_after"] = (Path(tmp) / "wasm-state.json").exists()
    return out


def _run(tmp: Path, netns: str, cgroup: str, mode: str) -> dict[str, Any]:
    code = ("import asyncio, json, sys; from tests.shim.server.test_sandbox_holder import _scenario; "
            "print(json.dumps(asyncio.run(_scenario(*sys.argv[1:]))))")
    p = subprocess.run([sys.executable, "-c", code, str(tmp), netns, cgroup, mode], cwd=ROOT, capture_output=True,
                       timeout=120, check=False)
    assert p.returncode == 0, p.stderr.decode()
    out: dict[str, Any] = json.loads(p.stdout.decode().strip().splitlines()[-1])
    return out


@pytest.fixture
def netns() -> Any:
    name = f"rwsbx-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield f"/var/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def _cgroup_dirs(top: str) -> list[str]:
    return [str(d) for d in CGROUP_ROOT.glob(f"*/{top}")] + ([str(CGROUP_ROOT / top)]
                                                             if (CGROUP_ROOT / top).is_dir() else [])


def test_holder_keeps_the_pod_namespaces(tmp_path: Path, netns: str) -> None:
    top = f"rwsbx-test-{os.getpid()}"
    try:
        res = _run(tmp_path, netns, f"/{top}/sbx1", "ok")
    finally:
        for d in sorted(_cgroup_dirs(top), reverse=True):
            for sub in sorted(Path(d).glob("**/"), key=lambda p: len(p.parts), reverse=True):
                sub.rmdir()
    assert res["ns"]["net"] == os.stat(netns).st_ino
    assert res["ns"]["ipc"] != _ns("self", "ipc")
    assert res["ns"]["uts"] != _ns("self", "uts")
    assert res["ns"]["pid"] != _ns("self", "pid")
    assert res["nspid"][0].split()[-1] == "1", res["nspid"]  # pid 1 of the pod's pid namespace
    assert res["hostname"] == "holder-test"
    assert res["sysctl"] == "81"  # written in the pod's network namespace only
    assert Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip() != "81" or \
        os.stat(netns).st_ino == _ns("self", "net")
    assert f"/{top}/sbx1" in res["cgroup"]
    # it runs no pod code and keeps no privilege: no capability in any set, no_new_privs
    assert res["privileges"] == {"CapInh": "0" * 16, "CapPrm": "0" * 16, "CapEff": "0" * 16,
                                 "CapBnd": "0" * 16, "CapAmb": "0" * 16, "NoNewPrivs": "1"}, res["privileges"]
    assert res["recorded"] is True
    assert res["status"] == 0  # SIGTERM ends it cleanly
    assert res["recorded_after"] is False
    assert _cgroup_dirs(top) == [], "release left the holder's cgroup"


def test_failed_setup_is_invalid_argument_and_leaves_nothing(tmp_path: Path, netns: str) -> None:
    top = f"rwsbx-fail-{os.getpid()}"
    res = _run(tmp_path, netns, f"/{top}/sbx1", "bad-sysctl")
    status, message = res["error"]
    assert status == "invalid_argument"
    assert "net.ipv4.no_such_sysctl" in message
    assert "sbx1" in message
    # the holder exits 1 after reporting; the launcher also SIGKILLs it on any error reply (it could
    # be stuck), and which comes first depends on scheduling: either way it is gone and reaped
    assert res["status"] in (1, 128 + 9), res["status"]
    assert _cgroup_dirs(top) == []
    assert not (tmp_path / "wasm-state.json").exists()
