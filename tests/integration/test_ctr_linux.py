"""Native (ELF) containers through real containerd 1.6: ``ctr run``, ``ctr task exec|ps|pause|
resume|metrics``, a TTY exec, and no leaked cgroups, mounts, namespaces or processes after
delete, also when the shim server was SIGKILLed (containerd then runs our ``delete``).

The busybox image comes from ``fixtures.images.busybox_image``; its entrypoint is an ELF binary,
so the shim routes it to runwasm's Linux namespace executor.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.images import busybox_image
from tests.integration.daemon import CGROUP_ROOT, SOCKET_DIR, Containerd, _alive, _env_of, _pids, wait_status
from tests.integration.watch import EventWatcher

pytestmark = pytest.mark.integration

BUSYBOX_REF = "runwasm.test/busybox:linux"
NS_KINDS = ("pid", "mnt", "uts", "ipc", "net", "cgroup")


@pytest.fixture(scope="module")
def busybox(containerd: Containerd, tmp_path_factory: pytest.TempPathFactory) -> str:
    tar = busybox_image(tmp_path_factory.mktemp("bbimage") / "busybox.tar", BUSYBOX_REF)
    containerd.ctr("images", "import", str(tar))
    return BUSYBOX_REF




def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def init_exit(events: EventWatcher, cid: str, timeout: float = 10.0) -> dict[str, object]:
    """The body of the init's ``/tasks/exit`` (an exec's exit has the same container_id)."""
    deadline = time.monotonic() + timeout
    while True:
        events.wait_for("/tasks/exit", cid, timeout=max(deadline - time.monotonic(), 0.01))
        for ev in list(events.events):
            if ev.topic == "/tasks/exit" and ev.body.get("container_id") == cid and ev.body.get("id") == cid:
                return ev.body
        if time.monotonic() > deadline:
            raise AssertionError(f"no init exit for {cid!r}: {events.events}")
        time.sleep(0.05)


def bundle_of(daemon: Containerd, cid: str) -> Path:
    return daemon.dir / "state" / "io.containerd.runtime.v2.task" / daemon.namespace / cid


@dataclass(frozen=True, slots=True)
class Footprint:
    """What a running container holds on the host, captured while it runs."""

    cid: str
    bundle: Path
    pids: tuple[int, ...]
    namespaces: tuple[str, ...]  # "pid:[4026532...]" identifiers of the init's own namespaces
    cgroups: tuple[Path, ...]
    socket: Path

    @classmethod
    def capture(cls, daemon: Containerd, cid: str, init_pid: int) -> Footprint:
        own = []
        for kind in NS_KINDS:
            mine = os.readlink(f"/proc/{init_pid}/ns/{kind}")
            if mine != os.readlink(f"/proc/self/ns/{kind}"):
                own.append(mine)
        cgroups = tuple(c / daemon.namespace / cid for c in CGROUP_ROOT.iterdir()
                        if (c / daemon.namespace / cid).is_dir())
        pids = tuple(int(p) for p in daemon.ctr("task", "ps", cid).stdout.split()[2::2])
        socket = SOCKET_DIR / hashlib.sha256(posixpath.join(daemon.address, daemon.namespace, cid).encode()).hexdigest()
        assert socket.exists(), f"shim socket {socket} not found"
        return cls(cid, bundle_of(daemon, cid), pids, tuple(own), cgroups, socket)

    def leaks(self, *, socket: bool = True) -> list[str]:
        """What is still there; ``socket=False`` skips the shim socket file, which a SIGKILLed
        server leaves behind (so does containerd 1.6's runc v2 shim; the next ``start`` of the
        same id removes it as stale)."""
        found = [f"process {p}" for p in self.pids if _alive(p)]
        found += [f"bundle {self.bundle}"] if self.bundle.exists() else []
        found += [f"shim socket {self.socket}"] if socket and self.socket.exists() else []
        found += [f"cgroup {c}" for c in self.cgroups if c.exists()]
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if str(self.bundle) in line or any(ns in fields[3] for ns in self.namespaces):
                    found.append(f"mount {fields[4]} ({fields[3]})")
        for pid in _pids():
            for kind in NS_KINDS:
                try:
                    ns = os.readlink(f"/proc/{pid}/ns/{kind}")
                except OSError:
                    continue
                if ns in self.namespaces:
                    found.append(f"namespace {ns} held by pid {pid} ({_cmdline(pid)!r})")
        return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def wait_no_leaks(fp: Footprint, timeout: float = 10.0, *, socket: bool = True) -> list[str]:
    deadline = time.monotonic() + timeout
    while (leaks := fp.leaks(socket=socket)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return leaks


@pytest.fixture
def sleeper(containerd: Containerd, busybox: str, request: pytest.FixtureRequest) -> tuple[str, int]:
    """A detached ``sleep 1000`` container (not --rm); yields (id, init host pid)."""
    cid = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    containerd.run(busybox, cid, "sleep", "1000", rm=False, detach=True, check=True)
    pid, _ = wait_status(containerd, cid, "RUNNING")
    return cid, pid  # _clean_containers removes it


# --- ctr run ----------------------------------------------------------------------------------


def test_run_native_container(containerd: Containerd, busybox: str) -> None:
    # ctr 1.6 has no --hostname: the spec sets none, so the new UTS namespace keeps the host's name
    res = containerd.run(busybox, "lx-run", "/bin/sh", "-c",
                         "echo hello; echo pid=$$; hostname; readlink /proc/self/ns/uts")
    assert res.returncode == 0, res.output
    assert res.stdout.splitlines()[:3] == ["hello", "pid=1", socket.gethostname()]
    assert res.stdout.splitlines()[3] != os.readlink("/proc/self/ns/uts")
    assert "lx-run" not in containerd.ctr("containers", "ls", "-q").stdout.split()
    assert "routed to linux" in containerd.log_tail(200)


@pytest.mark.parametrize("status", [3, 0, 255])
def test_run_exit_status_propagates(containerd: Containerd, busybox: str, status: int) -> None:
    res = containerd.run(busybox, f"lx-exit-{status}", "/bin/sh", "-c", f"exit {status}")
    assert res.returncode == status, res.output


def test_init_ignores_sigkill_from_inside(containerd: Containerd, busybox: str) -> None:
    # pid 1 of a real pid namespace: the kernel drops SIGKILL sent from inside (as under runc)
    res = containerd.run(busybox, "lx-selfkill", "/bin/sh", "-c", "kill -9 $$; echo survived; exit 4")
    assert (res.returncode, res.stdout) == (4, "survived\n"), res.output


# --- exec, ps, kill ---------------------------------------------------------------------------


def test_exec_ps_kill_rm(containerd: Containerd, busybox: str, sleeper: tuple[str, int]) -> None:
    cid, init = sleeper
    res = containerd.ctr("task", "exec", "--exec-id", "e1", cid, "/bin/sh", "-c",
                         "echo exec-ok; cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/self/cgroup",
                         check=False)
    assert res.returncode == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[:2] == ["exec-ok", "sleep 1000 "]  # pid 1 of the exec's pid namespace is the init
    # the exec runs in the container's cgroup
    assert any(ln.endswith(f":memory:/{containerd.namespace}/{cid}") for ln in lines), lines
    assert containerd.ctr("task", "exec", "--exec-id", "e2", cid, "/bin/sh", "-c", "exit 5",
                          check=False).returncode == 5
    # a detached exec, then ps lists both processes
    containerd.ctr("task", "exec", "-d", "--fifo-dir", str(containerd.fifo_dir), "--exec-id", "e3", cid,
                   "sleep", "999")
    deadline = time.monotonic() + 5
    while len(pids := containerd.ctr("task", "ps", cid).stdout.split()[2::2]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pids) == 2, pids
    assert str(init) in pids, pids
    exec_pid = int(next(p for p in pids if p != str(init)))
    # Start returns once the process was told to run, not once its execve finished (runc's
    # start does the same): until then its command line is still the executor's
    deadline = time.monotonic() + 10
    while _cmdline(exec_pid) != "sleep 999" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _cmdline(exec_pid) == "sleep 999"
    fp = Footprint.capture(containerd, cid, init)
    with EventWatcher(containerd) as events:
        containerd.ctr("task", "kill", "-a", "-s", "SIGKILL", cid)
        exit_event = init_exit(events, cid)
    assert exit_event["exit_status"] == 128 + signal.SIGKILL
    wait_status(containerd, cid, "STOPPED")
    assert wait_gone([init, exec_pid]) == []
    removed = containerd.ctr("task", "rm", cid)
    assert "exit code 137" in removed.output
    containerd.ctr("containers", "rm", cid)
    assert wait_no_leaks(fp) == []


def test_exec_sees_container_namespaces(containerd: Containerd, busybox: str, sleeper: tuple[str, int]) -> None:
    cid, init = sleeper
    res = containerd.ctr("task", "exec", "--exec-id", "ns", cid, "/bin/sh", "-c",
                         "for n in pid mnt uts ipc net; do readlink /proc/self/ns/$n; done", check=False)
    assert res.returncode == 0, res.output
    want = [os.readlink(f"/proc/{init}/ns/{n}") for n in ("pid", "mnt", "uts", "ipc", "net")]
    assert res.stdout.split() == want


def test_exec_tty(containerd: Containerd, busybox: str, sleeper: tuple[str, int]) -> None:
    # ctr needs its stdin to be a console for -t: script(1) gives it one, sized 33x101 so that
    # ctr's ResizePty (sent right after Start) has something to carry
    cid, _ = sleeper
    inner = ("tty; i=0; while [ $i -lt 50 ]; do s=$(stty size); [ \"$s\" = \"33 101\" ] && break; "
             "sleep 0.1; i=$((i+1)); done; echo size=$s; echo tty-ok")
    argv = containerd.ctr_argv("task", "exec", "-t", "--exec-id", "tty1", cid, "/bin/sh", "-c", inner)
    cmd = f"stty rows 33 cols 101; exec {shlex.join(argv)}"
    res = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True,
                         timeout=30, env=containerd.env(), stdin=subprocess.DEVNULL)
    # script(1) forwards EOF on its stdin as a control character, which the container's pty echoes
    lines = [ln.strip("\x00^@") for ln in res.stdout.replace("\r", "").splitlines()]
    assert res.returncode == 0, res.stdout + res.stderr
    assert any(re.fullmatch(r"/dev/pts/\d+", ln) for ln in lines), lines
    assert "size=33 101" in lines
    assert "tty-ok" in lines


def test_tty_resize_after_exit_is_not_an_error(containerd: Containerd, busybox: str,
                                              sleeper: tuple[str, int]) -> None:
    # ctr sends ResizePty right after Start; with `true` it often arrives after the pty hung up
    # (before the fix: 'resize pty ... Bad file descriptor: unknown' in about 1 run of 4)
    cid, _ = sleeper
    for i in range(10):
        argv = containerd.ctr_argv("task", "exec", "-t", "--exec-id", f"quick{i}", cid, "true")
        res = subprocess.run(["script", "-qec", f"stty rows 20 cols 70; exec {shlex.join(argv)}", "/dev/null"],
                             capture_output=True, text=True, timeout=30, env=containerd.env(),
                             stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "resize pty" not in res.stdout + res.stderr, res.stdout


# --- pause, resume, metrics -------------------------------------------------------------------


def test_pause_resume(containerd: Containerd, busybox: str, sleeper: tuple[str, int]) -> None:
    cid, init = sleeper
    freezer = CGROUP_ROOT / "freezer" / containerd.namespace / cid / "freezer.state"
    containerd.ctr("task", "pause", cid)
    assert wait_status(containerd, cid, "PAUSED")
    assert freezer.read_text().strip() == "FROZEN"
    assert Path(f"/proc/{init}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("D", "S")
    # after resume the container runs new processes again
    containerd.ctr("task", "resume", cid)
    assert wait_status(containerd, cid, "RUNNING")
    assert freezer.read_text().strip() == "THAWED"
    res = containerd.ctr("task", "exec", "--exec-id", "after", cid, "echo", "thawed", check=False)
    assert (res.returncode, res.stdout) == (0, "thawed\n"), res.output


def test_metrics(containerd: Containerd, busybox: str) -> None:
    cid = "lx-metrics"
    limit = 64 * 1024 * 1024
    containerd.run(busybox, cid, "sleep", "1000", rm=False, detach=True, check=True,
                   extra=("--memory-limit", str(limit)))
    wait_status(containerd, cid, "RUNNING")
    table = containerd.ctr("task", "metrics", cid).stdout
    values = dict(re.findall(r"^(\S+)\s{2,}(.+?)\s*$", table, re.M))
    assert int(values["memory.usage_in_bytes"]) > 0, table
    assert int(values["memory.limit_in_bytes"]) == limit, table
    assert int(values["pids.current"]) == 1, table
    assert int(values["cpuacct.usage"]) > 0, table
    doc = json.loads(containerd.ctr("task", "metrics", "--format", "json", cid).stdout)
    assert doc["memory"]["usage"]["usage"] > 0
    assert doc["memory"]["usage"]["limit"] == limit
    cgroup_limit = CGROUP_ROOT / "memory" / containerd.namespace / cid / "memory.limit_in_bytes"
    assert int(cgroup_limit.read_text()) == limit


# --- leaks ------------------------------------------------------------------------------------


def test_no_leaks_after_run_rm(containerd: Containerd, busybox: str, sleeper: tuple[str, int]) -> None:
    cid, init = sleeper
    fp = Footprint.capture(containerd, cid, init)
    assert fp.cgroups, fp
    assert fp.namespaces, fp
    assert fp.pids == (init,), fp
    assert fp.leaks(), "the footprint check must see the running container"
    containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
    wait_status(containerd, cid, "STOPPED")
    containerd.ctr("task", "rm", cid)
    containerd.ctr("containers", "rm", cid)
    assert wait_no_leaks(fp) == []


def shim_processes(daemon: Containerd, cid: str) -> list[int]:
    """Shim server and zygote of ``cid`` (same cmdline), oldest first."""
    found = []
    for pid in _pids():
        argv = _cmdline(pid).split()
        # other checkouts' shims run on this machine too (their argv may differ): ours first
        if "_runwasm_serve" in argv and "-id" in argv and argv[argv.index("-id") + 1:][:1] == [cid] \
                and _env_of(pid).get("TTRPC_ADDRESS") == daemon.ttrpc_address:
            found.append(pid)
    return sorted(found, key=lambda p: int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[19]))


@pytest.mark.parametrize("victims", ["server", "all"])
def test_no_leaks_after_shim_sigkill(containerd: Containerd, busybox: str, sleeper: tuple[str, int],
                                     victims: str) -> None:
    cid, init = sleeper
    containerd.ctr("task", "exec", "-d", "--fifo-dir", str(containerd.fifo_dir), "--exec-id", "bg", cid,
                   "sleep", "999")
    deadline = time.monotonic() + 5
    while len(containerd.ctr("task", "ps", cid).stdout.split()[2::2]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    fp = Footprint.capture(containerd, cid, init)
    assert len(fp.pids) == 2, fp
    assert fp.cgroups, fp
    assert fp.namespaces, fp
    shims = shim_processes(containerd, cid)
    assert len(shims) == 2, f"expected the server and its zygote, got {shims}"
    with EventWatcher(containerd) as events:
        for pid in shims if victims == "all" else shims[:1]:
            os.kill(pid, signal.SIGKILL)
        assert wait_gone(shims) == []
        # containerd sees the shim disconnect and runs `containerd-shim-runwasm-v1 delete`
        exit_event = init_exit(events, cid, timeout=20)
    assert exit_event["exit_status"] == 128 + signal.SIGKILL
    # what a user does next
    listing = containerd.ctr("task", "ls").stdout
    containerd.ctr("task", "rm", "-f", cid, check=False)
    assert cid not in containerd.tasks(), listing
    containerd.ctr("containers", "rm", cid)
    assert cid not in containerd.ctr("containers", "ls", "-q").stdout.split()
    assert wait_no_leaks(fp, socket=False) == []
    # the same id runs again (start replaces the stale socket) and a clean delete leaves nothing
    res = containerd.run(busybox, cid, "/bin/sh", "-c", "echo again")
    assert (res.returncode, res.stdout) == (0, "again\n"), res.output
    assert wait_no_leaks(fp) == []
