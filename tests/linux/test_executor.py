"""LinuxContainer on the real kernel: exec, pids, kill all, pause/resume, update, stats, OOM,
terminal, and cleanup (also after the parent was SIGKILLed)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runwasm.linux.executor import LinuxContainer
from runwasm.linux.task_cgroup import CPU_SAMPLE_INTERVAL_NS, cpu_usage_ns
from runwasm.oci.runtime_spec import parse_process
from tests.linux.harness import Bundle, Started, base_config

pytestmark = pytest.mark.privileged

if os.geteuid() != 0:
    pytest.skip("needs root", allow_module_level=True)


def _start(b: Bundle) -> Started:
    s = Started(b.launch())
    assert s.msg["type"] == "ready", s.msg
    b.container.attach(s.pid)
    s.start()
    return s


def _exec(b: Bundle, args: list[str], terminal: bool = False) -> Started:
    proc = parse_process({"args": args, "env": ["PATH=/bin"], "cwd": "/", "terminal": terminal})
    s = Started(b.container.prepare_exec("e1", proc))
    assert s.msg["type"] == "ready", s.msg
    b.container.attach(s.pid, init=False)
    s.start()
    return s


def test_exec_pids_pause_update_stats_kill_all() -> None:
    cfg = base_config(["sleep", "1000"])
    cfg["linux"]["resources"]["memory"] = {"limit": 128 << 20}
    b = Bundle(cfg)
    try:
        init = _start(b)
        ex = _exec(b, ["sh", "-c", "echo $$; hostname; cat /proc/1/cmdline"])
        r = ex.wait()
        assert r.status == 0, r.stderr
        assert r.stdout.replace("\0", " ").split() == ["2", "rwtest", "sleep", "1000"]
        assert b.container.pids() == [init.pid]
        b.container.pause()
        assert b.container.cgroup is not None
        assert b.container.cgroup.frozen()
        b.container.resume()
        assert not b.container.cgroup.frozen()
        b.container.update({"memory": {"limit": 96 << 20}, "pids": {"limit": 20}})
        m = b.container.stats()
        assert m.version == 1
        assert m.memory.limit == 96 << 20
        assert m.pids.limit == 20
        assert m.pids.current == 1
        assert m.cpu.usage_ns > 0
        assert b.container.kill_all(signal.SIGKILL) == 1
        assert init.wait().status == 137
    finally:
        b.cleanup()
    assert not list(Path("/sys/fs/cgroup/memory/runwasm/default").glob(b.cid))


def test_terminal_master_fd_is_sent_with_ready() -> None:
    cfg = base_config(["sh", "-c", "tty; stty size; echo done"])
    cfg["process"]["terminal"] = True
    cfg["process"]["consoleSize"] = {"height": 33, "width": 101}
    b = Bundle(cfg)
    try:
        s = Started(b.launch())
        assert s.msg == {"type": "ready", "pid": 1, "pty": True}
        assert len(s.fds) == 1
        master = s.fds[0]
        b.container.attach(s.pid)
        s.start()
        out = b""
        while True:
            ready, _, _ = select.select([master], [], [], 10)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO once the slave side is closed
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        r = s.wait()
        assert r.status == 0
        lines = out.decode().split()
        assert lines[0].startswith("/dev/pts/")
        assert lines[1:] == ["33", "101", "done"]
    finally:
        b.cleanup()


def test_oom_kill_is_reported_before_exit() -> None:
    cfg = base_config(["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"])
    cfg["linux"]["resources"]["memory"] = {"limit": 16 << 20, "swap": 16 << 20}
    cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/tmp"]
    b = Bundle(cfg)
    try:
        s = Started(b.launch())
        w = b.container.oom_watcher()
        b.container.attach(s.pid)
        s.start()
        ready, _, _ = select.select([w.fileno()], [], [], 20)
        assert ready, "no OOM event"
        assert w.read() >= 1
        r = s.wait()
        w.close()
        # the shell is pid 1 of its namespace: the kernel kills the allocating child (tr/sh) and
        # the script goes on, or kills pid 1 itself
        assert r.status == 137 or "survived" in r.stdout
        assert b.container.stats().memory.oom_kills >= 1
    finally:
        b.cleanup()


_PARENT = r"""
import os, sys, time
sys.path.insert(0, {root!r})
from tests.linux.harness import Bundle, Started, base_config
b = Bundle(base_config(["sh", "-c", "sleep 1000 & sleep 1000"]))
s = Started(b.launch())
b.container.attach(s.pid)
s.start()
print(b.dir, b.cid, s.pid, flush=True)
time.sleep(1000)
"""


def test_destroy_after_parent_sigkill_leaves_nothing() -> None:
    root = str(Path(__file__).resolve().parents[2])
    parent = subprocess.Popen([sys.executable, "-c", _PARENT.format(root=root)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    bundle, cid, pid = parent.stdout.readline().split()
    deadline = time.monotonic() + 30
    while len(LinuxContainer.load(Path(bundle)).pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # the shell forks its first sleep when it gets the CPU
    parent.kill()
    parent.wait()
    c = LinuxContainer.load(Path(bundle))
    assert len(c.pids()) == 2  # the two sleeps (sh execs the last one), now orphans
    c.destroy()
    c.destroy()  # idempotent
    assert not (Path(bundle) / "linux-state.json").exists()
    for h in ("memory", "cpu", "pids", "freezer", "systemd"):
        assert not Path(f"/sys/fs/cgroup/{h}/runwasm/default/{cid}").exists()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        try:  # earlier tests made this process a subreaper: the orphan may be our zombie
            os.waitpid(int(pid), os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.01)
    assert not os.path.exists(f"/proc/{pid}")
    mounts = Path("/proc/self/mountinfo").read_text()
    assert bundle not in mounts
    import shutil

    shutil.rmtree(bundle)


def test_cpu_nanocores_of_a_busy_container() -> None:
    b = Bundle(base_config(["sh", "-c", "while :; do :; done"]))
    try:
        init = _start(b)
        assert b.container.cpu_nanocores() is None
        cgroup = b.container._tc().cgroup  # noqa: SLF001 - its own counter is the expected value

        def sample() -> tuple[int, int, int, int]:
            """(usage before, usage after, time before, time after) around one sample."""
            u0, t0 = cpu_usage_ns(cgroup), time.monotonic_ns()
            b.container.sample_cpu()
            return u0, cpu_usage_ns(cgroup), t0, time.monotonic_ns()

        u0a, u0b, t0a, t0b = sample()
        deadline = time.monotonic() + 120  # against a hang only: the figures below do not depend on it
        while time.monotonic_ns() - t0b < CPU_SAMPLE_INTERVAL_NS or cpu_usage_ns(cgroup) < u0b + 10**8:
            assert time.monotonic() < deadline, "the busy container used no CPU"
            time.sleep(0.05)
        u1a, u1b, t1a, t1b = sample()
        cores = b.container.cpu_nanocores()
        assert cores is not None
        # the busy shell's own usage over the interval, whatever the machine's load
        assert (u1a - u0b) * 10**9 // (t1b - t0a) <= cores <= (u1b - u0a) * 10**9 // (t1a - t0b), cores
        assert cores > 0
        b.container.kill_all(signal.SIGKILL)
        assert init.wait().status == 137
    finally:
        b.cleanup()
