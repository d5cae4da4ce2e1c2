"""Test helpers: a synchronous stand-in for the shim's zygote contract, bundles and a runner.

``spawn`` reproduces docs/contributing.md "Process model": fork an intermediate that
optionally unshares/joins a pid namespace and forks the workload; the workload calls setsid,
keeps only the named fds (renumbered from 3) and calls the entry point. The test process is a
child subreaper so it reaps the workload.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runwasm.linux import syscalls as sc
from runwasm.linux.executor import LinuxContainer, LinuxLaunch
from runwasm.linux.terminal import recv_message
from runwasm.oci.control import send
from runwasm.oci.runtime_spec import RuntimeSpec

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "build" / "linux" / "rootfs"

_subreaper = False


def ensure_fixture() -> Path:
    if not (FIXTURE / "bin" / "busybox").exists():
        from fixtures.linux.build import build

        build(FIXTURE.parent)
    return FIXTURE


def spawn(entry: str, payload: dict[str, Any], fds: dict[str, int], pidns: str | None) -> int:
    global _subreaper
    if not _subreaper:
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        _subreaper = True
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            if pidns == "new":
                sc.unshare(sc.CLONE_NEWPID)
            elif pidns:
                nfd = os.open(pidns, os.O_RDONLY)
                sc.setns(nfd, sc.CLONE_NEWPID)
                os.close(nfd)
            child = os.fork()
            if child:
                os.write(w, str(child).encode())
                os._exit(0)
            os.close(w)
            os.setsid()
            for s in range(1, signal.NSIG):
                try:
                    signal.signal(s, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
            names = sorted(fds)
            high = {n: os.dup(fds[n]) for n in names}
            base = 1000
            moved = {}
            for i, n in enumerate(names):
                os.dup2(high[n], base + i)
                moved[n] = base + i
            for fd in range(3, base):
                try:
                    os.close(fd)
                except OSError:
                    pass
            out = {}
            for i, n in enumerate(names):
                os.dup2(moved[n], 3 + i)
                os.close(moved[n])
                out[n] = 3 + i
            mod, _, fn = entry.partition(":")
            getattr(importlib.import_module(mod), fn)(payload, out)
        except BaseException as err:  # noqa: BLE001
            os.write(2, f"spawn failed: {err!r}\n".encode())
        os._exit(99)
    os.close(w)
    os.waitpid(pid, 0)
    data = os.read(r, 32)
    os.close(r)
    return int(data)


def base_config(args: list[str], **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {"args": args, "env": ["PATH=/bin", "FOO=bar"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                    "capabilities": {k: ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]
                                     for k in ("bounding", "effective", "permitted", "ambient")},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}], "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "rwtest",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    }
    for k, v in over.items():
        cfg[k] = v
    return cfg


@dataclass
class Run:
    status: int
    stdout: str
    stderr: str
    ready: dict[str, Any] = field(default_factory=dict)

    def kv(self) -> dict[str, str]:
        out = {}
        for line in self.stdout.splitlines():
            for part in line.split(" ") if line.startswith(("uid=", "dev_")) else [line]:
                k, _, v = part.partition("=")
                out[k] = v
        return out


class Bundle:
    """A bundle dir with a private copy of the fixture rootfs and a config.json."""

    def __init__(self, config: dict[str, Any], cid: str | None = None, owner: int | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rwlinux-"))
        self.dir.chmod(0o755)  # a mapped (user namespace) root must be able to reach the rootfs
        shutil.copytree(ensure_fixture(), self.dir / "rootfs", symlinks=True)
        if owner is not None:  # a user namespace rootfs belongs to the mapped root, as containerd makes it
            for dirpath, dirnames, filenames in os.walk(self.dir / "rootfs"):
                os.lchown(dirpath, owner, owner)
                for n in dirnames + filenames:
                    os.lchown(os.path.join(dirpath, n), owner, owner)
        self.config = copy.deepcopy(config)
        (self.dir / "config.json").write_text(json.dumps(self.config))
        self.cid = cid or f"t{os.getpid()}-{time.monotonic_ns() % 10**9}"
        self.container = LinuxContainer(self.dir)

    def spec(self) -> RuntimeSpec:
        return RuntimeSpec.load(self.dir)

    def launch(self) -> LinuxLaunch:
        return self.container.prepare(self.cid, self.dir, self.spec(), self.dir / "rootfs")

    def cleanup(self) -> None:
        self.container.destroy()
        shutil.rmtree(self.dir, ignore_errors=True)


class Started:
    """A spawned workload with its control socket and stdout/stderr pipes."""

    def __init__(self, launch: LinuxLaunch, stdin: bool = False) -> None:
        self.ctl, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.out_r, out_w = os.pipe()
        self.err_r, err_w = os.pipe()
        fds = {"control": child.fileno(), "stdout": out_w, "stderr": err_w}
        if stdin:
            in_r, self.in_w = os.pipe()
            fds["stdin"] = in_r
        self.pid = spawn(launch.entry, launch.payload, fds, launch.pidns)
        child.close()
        os.close(out_w)
        os.close(err_w)
        if stdin:
            os.close(in_r)
        self.msg, self.fds = recv_message(self.ctl)

    def start(self) -> None:
        send(self.ctl, {"type": "start"})

    def wait(self, timeout: float = 20.0) -> Run:
        out = _read_all(self.out_r)
        err = _read_all(self.err_r)
        status = wait_pid(self.pid, timeout)
        self.ctl.close()
        return Run(status, out, err, self.msg)


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def wait_pid(pid: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


def run_container(config: dict[str, Any], owner: int | None = None) -> Run:
    b = Bundle(config, owner=owner)
    try:
        s = Started(b.launch())
        if s.msg.get("type") != "ready":
            wait_pid(s.pid)
            return Run(-1, "", str(s.msg), s.msg)
        b.container.attach(s.pid)
        s.start()
        return s.wait()
    finally:
        b.cleanup()


def run_runc(config: dict[str, Any]) -> Run:
    b = Bundle(config)
    try:
        p = subprocess.run(["runc", "--root", str(b.dir / "runc-root"), "run", "--bundle", str(b.dir), b.cid],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        return Run(p.returncode, p.stdout, p.stderr)
    finally:
        shutil.rmtree(b.dir, ignore_errors=True)


def drop_subreaper() -> None:
    """Undo ``spawn``'s subreaper setting and reap orphans it collected, so that later tests in
    this pytest process (which start real shims whose servers must be re-parented to init, not to
    pytest) see the process as it was."""
    global _subreaper
    if _subreaper:
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 0)
        _subreaper = False
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def in_child(fn: Callable[[], str]) -> str:
    """Run ``fn`` in a forked child (one thread, whatever pytest runs); returns what it returned,
    or the exception it raised as ``"<type>: <message>"``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = fn()
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            out = f"{type(err).__name__}: {err}"
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read().decode()
    os.waitpid(pid, 0)
    return data
