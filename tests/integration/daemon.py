"""A private containerd daemon (Debian's 1.6, or the prebuilt 2.3.4) for integration tests and ``make bench``.

``Containerd(flavour="2.3")`` runs the binaries in ``$RUNWASM_CONTAINERD23_BIN`` (default
``../shared/tools/containerd-2.3.4/bin`` next to this checkout) with a version 3 config, CRI and
NRI disabled (NRI's socket is a global path); ``containerd23_bin()`` is ``None`` when they are
absent, and tests skip with ``CONTAINERD23_MISSING``.

``Containerd`` owns one short temporary directory (root, state, sockets, opt plugin path, logs,
ctr FIFOs) and one containerd namespace. It starts the daemon with the venv's bin directory
first on PATH, so containerd resolves ``io.containerd.runwasm.v1`` to this checkout's
``containerd-shim-runwasm-v1`` (shim-protocol.md §17).

containerd 1.6 writes some paths outside its root/state even with a private config
(stack.md §6): shim sockets in ``/run/containerd/s``, ctr's FIFOs in ``/run/containerd/fifo``,
runc state in ``/run/containerd/runc/<ns>`` and cgroups ``/sys/fs/cgroup/<ctrl>/<ns>``.
``close()`` removes only what can be attributed to this daemon: sockets named after the
(address, namespace, id) triples it ran, the runc/cgroup dirs of its own unique namespace,
and the ``/run/containerd`` dirs themselves when this daemon created them and they are empty.
Leftover shims are found by their environment (``TTRPC_ADDRESS`` = this daemon's ttrpc
socket), never by process name, because other engineers run shims on the same machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RUNWASM_RUNTIME = "io.containerd.runwasm.v1"
RUNC_RUNTIME = "io.containerd.runc.v2"
GLOBAL_RUN = Path("/run/containerd")
SOCKET_DIR = GLOBAL_RUN / "s"
FIFO_DIR = GLOBAL_RUN / "fifo"
CGROUP_ROOT = Path("/sys/fs/cgroup")
UNIX_PATH_MAX = 108


class DaemonError(RuntimeError):
    """The private daemon could not be started or a ctr command failed."""


def venv_bin() -> Path:
    """The directory of the running interpreter (the venv's bin, holding the shim binary)."""
    return Path(sys.executable).parent


def containerd_binary() -> str | None:
    return shutil.which("containerd")


REPO = Path(__file__).resolve().parents[2]
CONTAINERD23_ENV = "RUNWASM_CONTAINERD23_BIN"


def containerd23_bin() -> Path | None:
    """The directory holding containerd 2.3.4's ``containerd``, ``ctr`` and runc shim, if present."""
    d = Path(os.environ.get(CONTAINERD23_ENV) or REPO.parent / "shared" / "tools" / "containerd-2.3.4" / "bin")
    return d if (d / "containerd").is_file() and (d / "ctr").is_file() else None


CONTAINERD23_MISSING = (f"containerd 2.3.4 binaries not found (set ${CONTAINERD23_ENV} to the directory holding "
                        "containerd, ctr and containerd-shim-runc-v2; default ../shared/tools/containerd-2.3.4/bin)")


@dataclass(frozen=True, slots=True)
class CtrResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _env_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Containerd:
    """One private containerd daemon; use ``start()``/``close()`` or as a context manager."""

    def __init__(self, namespace: str | None = None, flavour: str = "1.6", *, env: dict[str, str] | None = None,
                 extra_config: str = "") -> None:
        """``env``: added to the daemon's (and ctr's) environment, e.g. ``OTEL_*``;
        ``extra_config``: TOML appended to the config (e.g. a plugin table)."""
        self.extra_env = dict(env or {})
        self.extra_config = extra_config
        if flavour not in ("1.6", "2.3"):
            raise ValueError(f"unknown containerd flavour {flavour!r} (expected '1.6' or '2.3')")
        self.flavour = flavour
        self.bin_dir = containerd23_bin() if flavour == "2.3" else None
        if flavour == "2.3" and self.bin_dir is None:
            raise DaemonError(CONTAINERD23_MISSING)
        self.dir = Path(tempfile.mkdtemp(prefix="rwcd-", dir="/tmp"))
        self.namespace = namespace or f"rwt{os.getpid()}"
        # the top cgroup (under each controller) that this daemon's containers live in and that
        # close() removes: containerd names it after the namespace for ctr-made containers
        self.cgroup_name = self.namespace
        self.address = str(self.dir / "c.sock")
        self.ttrpc_address = str(self.dir / "c.sock.ttrpc")
        self.config = self.dir / "config.toml"
        self.fifo_dir = self.dir / "fifo"
        self.log_path = self.dir / "containerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ids: set[str] = set()  # container ids this daemon ran, for socket cleanup
        self.killed_leftovers: list[int] = []  # shim/workload pids close() had to SIGKILL
        self._created_global = {p: not p.exists() for p in (GLOBAL_RUN, SOCKET_DIR, FIFO_DIR)}
        self._runc_state = GLOBAL_RUN / "runc" / self.namespace
        self._runc_created = not self._runc_state.exists()
        self._fifo_before = set(os.listdir(FIFO_DIR)) if FIFO_DIR.exists() else set()
        if len(self.ttrpc_address.encode()) >= UNIX_PATH_MAX:
            raise DaemonError(f"socket path {self.ttrpc_address!r} does not fit {UNIX_PATH_MAX} bytes")
        self._write_config()

    # --- lifecycle --------------------------------------------------------------------------

    def _write_config(self) -> None:
        d = self.dir
        self.fifo_dir.mkdir()
        if self.flavour == "2.3":
            disabled = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
                        "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.nri.v1.nri"]
            self.config.write_text(
                "version = 3\n"
                f'root = "{d}/root"\n'
                f'state = "{d}/state"\n'
                f"disabled_plugins = {disabled!r}\n".replace("'", '"')
                + f'[grpc]\n  address = "{self.address}"\n'
                f'[ttrpc]\n  address = "{self.ttrpc_address}"\n'
                f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{d}/opt"\n' + self.extra_config)
            return
        self.config.write_text(
            "version = 2\n"
            f'root = "{d}/root"\n'
            f'state = "{d}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.address}"\n'
            f'[ttrpc]\n  address = "{self.ttrpc_address}"\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{d}/opt"\n' + self.extra_config)

    def env(self) -> dict[str, str]:
        """The daemon's and ctr's environment: the venv's bin first (this checkout's shim), then,
        for 2.3, the 2.3.4 bin dir (its runc shim), then the caller's PATH."""
        first = [str(venv_bin())] + ([str(self.bin_dir)] if self.bin_dir else [])
        path = os.pathsep.join([*first, os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])
        return dict(os.environ, PATH=path, **self.extra_env)

    def binary(self, name: str) -> str | None:
        """``containerd`` or ``ctr`` of this daemon's flavour."""
        if self.bin_dir is not None:
            return str(self.bin_dir / name)
        return shutil.which(name)

    def _popen_argv(self, binary: str) -> list[str]:
        return [binary, "--config", str(self.config)]

    def start(self, timeout: float = 15.0) -> None:
        """Launch the daemon (same config every time) and wait until ``ctr version`` answers."""
        binary = self.binary("containerd")
        if binary is None:
            raise DaemonError("containerd binary not found on PATH")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self._popen_argv(binary), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                         start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise DaemonError(f"containerd exited with {self.proc.returncode} at start-up:\n{self.log_tail()}")
            res = self.ctr("version", check=False, timeout=5)
            if res.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise DaemonError(f"containerd did not answer `ctr version` in {timeout}s: {res.output}\n"
                                  f"{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal the daemon (SIGTERM, or SIGKILL to simulate a crash) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart_after_crash(self) -> None:
        """SIGKILL containerd (its shims survive) and start it again with the same config."""
        self.stop(signal.SIGKILL)
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Containerd:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- ctr --------------------------------------------------------------------------------

    def ctr(self, *args: str, check: bool = True, timeout: float = 60.0,
            namespace: str | None = None) -> CtrResult:
        """Run ``ctr --address <ours> --namespace <ours> ARGS``; raise DaemonError on failure if check."""
        argv = (self.binary("ctr") or "ctr", "--address", self.address, "--namespace", namespace or self.namespace,
                *args)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env(),
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as err:
            raise DaemonError(f"`{' '.join(argv)}` timed out after {timeout}s") from err
        res = CtrResult(tuple(args), proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise DaemonError(f"`{' '.join(argv)}` failed with {proc.returncode}: {res.output.strip()}")
        return res

    def run_args(self, image: str, container_id: str, *args: str, runtime: str = RUNWASM_RUNTIME,
                 rm: bool = True, detach: bool = False, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The ``ctr run`` argument list (FIFOs under our dir); records the id for cleanup."""
        self.ids.add(container_id)
        flags = ["--runtime", runtime, "--fifo-dir", str(self.fifo_dir), *extra]
        if rm:
            flags.append("--rm")
        if detach:
            flags.append("-d")
        return ("run", *flags, image, container_id, *args)

    def run(self, image: str, container_id: str, *args: str, runtime: str = RUNWASM_RUNTIME,
            rm: bool = True, detach: bool = False, check: bool = False, timeout: float = 60.0,
            extra: tuple[str, ...] = ()) -> CtrResult:
        return self.ctr(*self.run_args(image, container_id, *args, runtime=runtime, rm=rm, detach=detach,
                                       extra=extra), check=check, timeout=timeout)

    def ctr_argv(self, *args: str) -> list[str]:
        return [self.binary("ctr") or "ctr", "--address", self.address, "--namespace", self.namespace, *args]

    def tasks(self) -> dict[str, tuple[int, str]]:
        """``ctr task ls`` as {id: (pid, status)}."""
        out: dict[str, tuple[int, str]] = {}
        for line in self.ctr("task", "ls").stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3:
                out[parts[0]] = (int(parts[1]), parts[2])
        return out

    # --- cleanup ----------------------------------------------------------------------------

    def remove_all_containers(self) -> None:
        """Kill and delete every task and container of our namespace (best effort, logged)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        res = self.ctr("containers", "ls", "-q", check=False)
        ids = res.stdout.split()
        self.ids.update(ids)
        for cid in ids:
            self.ctr("task", "kill", "-s", "SIGKILL", cid, check=False, timeout=10)
        for cid in ids:
            deadline = time.monotonic() + 5
            while self.tasks().get(cid, (0, "STOPPED"))[1] not in ("STOPPED", "CREATED") \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            self.ctr("task", "rm", "-f", cid, check=False, timeout=10)
            res = self.ctr("containers", "rm", cid, check=False, timeout=10)
            if res.returncode != 0:
                print(f"[containerd cleanup] failed to remove container {cid!r}: {res.output.strip()}",
                      file=sys.stderr)

    def our_processes(self) -> list[int]:
        """Shims (runwasm or runc) and their workloads started for this daemon."""
        me = os.getpid()
        return [p for p in _pids() if p != me and _env_of(p).get("TTRPC_ADDRESS") == self.ttrpc_address]

    def _kill_leftovers(self) -> list[int]:
        pids = self.our_processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        return pids

    def _unmount_all(self) -> None:
        prefix = str(self.dir) + "/"
        mounts = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(prefix):
                    mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            res = subprocess.run(["umount", "-l", point], capture_output=True, text=True)
            if res.returncode != 0:
                print(f"[containerd cleanup] umount {point!r}: {res.stderr.strip()}", file=sys.stderr)

    def leftovers(self) -> list[str]:
        """What close() should have removed but is still there (empty when cleanup worked)."""
        found = [f"process {p}" for p in self.our_processes()]
        prefix = str(self.dir) + "/"
        with open("/proc/self/mountinfo") as f:
            found += [f"mount {ln.split()[4]}" for ln in f if ln.split()[4].startswith(prefix)]
        found += [f"path {p}" for p in (self.dir, *self.socket_paths()) if p.exists()]
        found += [f"cgroup {c / self.cgroup_name}" for c in CGROUP_ROOT.iterdir() if (c / self.cgroup_name).exists()] \
            if CGROUP_ROOT.is_dir() else []
        return found

    def socket_paths(self) -> list[Path]:
        """Shim socket paths containerd 1.6 and runwasm derive from our (address, ns, id)."""
        return [SOCKET_DIR / hashlib.sha256(posixpath.join(self.address, self.namespace, cid).encode()).hexdigest()
                for cid in sorted(self.ids)]

    def close(self) -> None:
        """Stop the daemon and remove everything it created, here and in the global paths."""
        with contextlib.suppress(DaemonError):
            self.remove_all_containers()
        self.stop()
        # shims exit on their own after containerd's Shutdown, asynchronously: give them a grace
        # period (a loaded machine) before counting any as leftovers that had to be killed
        deadline = time.monotonic() + 15
        while self.our_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.killed_leftovers = self._kill_leftovers()
        if self.killed_leftovers:
            print(f"[containerd cleanup] killed leftover shim processes {self.killed_leftovers}", file=sys.stderr)
        self._unmount_all()
        for sock in self.socket_paths():
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
        if FIFO_DIR.exists():
            for name in set(os.listdir(FIFO_DIR)) - self._fifo_before:
                entry = FIFO_DIR / name
                with contextlib.suppress(OSError):
                    if any(f.split("-", 1)[0] in self.ids or f.rsplit("-", 1)[0] in self.ids
                           for f in os.listdir(entry)):
                        shutil.rmtree(entry)
        if self._runc_created:
            shutil.rmtree(self._runc_state, ignore_errors=True)
        self._remove_cgroups()
        shutil.rmtree(self.dir, ignore_errors=True)
        for path in (FIFO_DIR, SOCKET_DIR, GLOBAL_RUN / "runc", GLOBAL_RUN):
            if self._created_global.get(path, path == GLOBAL_RUN / "runc" and self._runc_created):
                with contextlib.suppress(OSError):
                    path.rmdir()  # only when empty: another daemon may be using it

    def _remove_cgroups(self) -> None:
        """Remove ``/sys/fs/cgroup/<ctrl>/<cgroup_name>`` trees (children first); ours by name."""
        if not CGROUP_ROOT.is_dir():
            return
        for ctrl in CGROUP_ROOT.iterdir():
            top = ctrl / self.cgroup_name
            if not top.is_dir():
                continue
            for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: len(t[0]), reverse=True):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)


def wait_status(daemon: Containerd, cid: str, want: str, timeout: float = 10.0) -> tuple[int, str]:
    """Poll ``ctr task ls`` until task ``cid`` has status ``want``; returns (pid, status)."""
    deadline = time.monotonic() + timeout
    while True:
        got = daemon.tasks().get(cid)
        if got is not None and got[1] == want:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"task {cid!r} is {got}, expected {want} within {timeout}s")
        time.sleep(0.05)
