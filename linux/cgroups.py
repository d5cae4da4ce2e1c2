"""Container cgroups: one class per hierarchy version, chosen by probing the host.

Contract (both versions):
- ``create()`` makes the container's directories (recording which ones it made, so
  ``destroy()`` removes exactly those) and returns nothing; it raises AlreadyExistsError if the
  leaf exists and is populated.
- ``procs_files()`` lists the ``cgroup.procs`` files a process writes ``0`` into to join: the
  workload joins itself first thing (before unsharing the cgroup namespace, so the namespace's
  root is the container cgroup), and ``attach(pid)`` does the same from the parent.
- ``apply(resources)`` writes limits; ``freeze``/``thaw`` wait for the kernel to finish.
- ``destroy()`` kills what is left, waits for the cgroup to empty and rmdirs what ``create``
  made; it is idempotent and works from a fresh process given the same paths.

cgroup v1 (this host) joins every mounted v1 hierarchy, like runc. cgroup v2 enables the
controllers it needs in each ancestor's ``cgroup.subtree_control``.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from runwasm.linux.errors import AlreadyExistsError, InvalidArgumentError, SetupError, UnavailableError
from runwasm.linux.resources import DeviceRule, Resources, v1_writes, v2_writes

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")

# The devices every container gets whatever the spec says (runc's AllowedDevices), appended
# after the spec's rules so that /dev/null and friends work under a "deny all" rule.
DEFAULT_ALLOWED_DEVICES = (
    DeviceRule(True, "c", None, None, "m"), DeviceRule(True, "b", None, None, "m"),
    DeviceRule(True, "c", 1, 3), DeviceRule(True, "c", 1, 5), DeviceRule(True, "c", 1, 7),
    DeviceRule(True, "c", 1, 8), DeviceRule(True, "c", 1, 9), DeviceRule(True, "c", 5, 0),
    DeviceRule(True, "c", 5, 2), DeviceRule(True, "c", 136, None),
)


# os calls rather than open()/read_text(): a task's Create and Delete read and write a handful of
# these, and the io stack's objects cost more than the kernel's work (same flags as open("w"))
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def _write(path: Path | str, value: str) -> None:
    try:
        fd = os.open(path, _WRITE_FLAGS, 0o666)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as err:
        raise SetupError(f"failed to write cgroup file {str(path)!r} = {value!r}: "
                         f"[errno {err.errno}] {os.strerror(err.errno or 0)}") from err


def _read(path: Path | str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


_CPUSET_FILES = ("cpuset.cpus", "cpuset.mems")


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path)
    except OSError as err:
        raise SetupError(f"failed to create cgroup {path!r}: {err.strerror}") from err


def validate_path(cgroups_path: str) -> str:
    """Normalize ``linux.cgroupsPath`` for runwasm's cgroupfs driver: absolute, no ``..``.

    A relative path is taken from the hierarchy's root. runwasm has no systemd driver (the
    ``SystemdCgroup`` runtime option is refused), so a systemd-looking ``slice:prefix:name`` is,
    as with runc's and crun's cgroupfs drivers, one directory whose name contains colons (critest
    on containerd 1.6 sends such paths with the cgroupfs driver)."""
    p = "/" + cgroups_path.strip("/")
    if any(part == ".." for part in p.split("/")):
        raise InvalidArgumentError(f"failed to use cgroupsPath {cgroups_path!r}: '..' is not allowed")
    if p == "/":
        raise InvalidArgumentError(f"failed to use cgroupsPath {cgroups_path!r}: the root cgroup is not allowed")
    return p


class _MountTable:
    """``/proc/self/mountinfo``, read again only when the kernel says the mount table changed:
    an open mountinfo file polls ``POLLPRI`` after any mount or unmount in its namespace
    (proc(5)), and the poll itself resets that mark. A server creates a cgroup per task; this
    spares it reading and parsing the table each time while nothing was mounted in between."""

    def __init__(self) -> None:
        self._fd = -1
        self._pid = 0
        self._text = ""
        self._v1: dict[str, Path] | None = None
        self._parsed_from = ""  # the text _v1 was parsed from

    def v1_hierarchies(self) -> dict[str, Path]:
        text = self.text()
        if self._v1 is None or text is not self._parsed_from:
            self._v1, self._parsed_from = _parse_v1_hierarchies(text), text
        return dict(self._v1)

    def text(self) -> str:
        if self._pid == os.getpid() and self._fd >= 0:
            poller = select.poll()
            poller.register(self._fd, select.POLLPRI)
            if not poller.poll(0):
                return self._text
        else:  # first use, or a forked child: its own file
            self._fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
            self._pid = os.getpid()
        chunks = []
        offset = 0
        while chunk := os.pread(self._fd, 1 << 16, offset):
            chunks.append(chunk)
            offset += len(chunk)
        self._text = b"".join(chunks).decode(errors="replace")
        return self._text


_mount_table = _MountTable()


def v1_hierarchies(mountinfo: str | None = None) -> dict[str, Path]:
    """Map each mounted cgroup v1 hierarchy (``memory``, ``cpu``, ``systemd`` for name=systemd...)
    to its mountpoint, from /proc/self/mountinfo. Co-mounted controllers map to the same path."""
    if mountinfo is None:
        return _mount_table.v1_hierarchies()
    return _parse_v1_hierarchies(mountinfo)


def _parse_v1_hierarchies(text: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for line in text.splitlines():
        pre, _, post = line.partition(" - ")
        fields = post.split()
        if len(fields) < 3 or fields[0] != "cgroup":
            continue
        mountpoint = Path(pre.split()[4])
        for opt in fields[2].split(","):
            if opt.startswith("name="):
                out[opt[5:]] = mountpoint
            elif opt not in ("rw", "ro") and not opt.startswith(("release_agent", "clone_children")):
                out[opt] = mountpoint
    return out


def _remove_created(created: list[str], leaf: str, deadline: float) -> None:
    """rmdir what ``create`` made, deepest first, and drop the removed ones from ``created``.

    The leaf (the container's own directory) is waited for until ``deadline``; an ancestor
    ("/runwasm/<namespace>") gets one try, and when another container still has a cgroup
    below it, it is no longer ours to remove: it is forgotten, not reported."""
    suffix = "/" + leaf.strip("/")
    kept: list[str] = []
    for d in reversed(list(created)):
        if d.endswith(suffix):
            if not _rmdir_wait(d, deadline):
                kept.append(d)
            continue
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError as err:
            if err.errno in (errno.EBUSY, errno.ENOTEMPTY):
                log.debug("cgroup %r still has children: left for their owner", d)
            else:
                log.warning("failed to remove cgroup %r: %s", d, err)
                kept.append(d)
    created[:] = [d for d in created if d in kept]


def _rmdir_wait(path: str, deadline: float) -> bool:
    """rmdir ``path``, retrying EBUSY until ``deadline``; True when it is gone."""
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as err:
            if err.errno != errno.EBUSY or time.monotonic() > deadline:
                log.warning("failed to remove cgroup %r: %s", path, err)
                return False
            time.sleep(0.005)


@dataclass
class CgroupV1:
    """A container's cgroup in every cgroup v1 hierarchy."""

    path: str
    hierarchies: dict[str, Path] = field(default_factory=v1_hierarchies)
    created: list[str] = field(default_factory=list)  # directories made by create(), leaf last

    version = 1

    def dirs(self) -> dict[str, Path]:
        """Controller name -> the container's directory in that hierarchy."""
        return {name: mp / self.path.lstrip("/") for name, mp in self.hierarchies.items()}

    def dir(self, controller: str) -> Path:
        if controller not in self.hierarchies:
            raise UnavailableError(f"failed to use cgroup controller {controller!r}: no v1 hierarchy mounts it")
        return self.hierarchies[controller] / self.path.lstrip("/")

    def create(self) -> None:
        # plain strings and one mkdir per hierarchy in the common case (parents exist): this runs
        # once per task, and pathlib plus an is_dir() per level cost more than the kernel's work
        try:
            self._create()
        except BaseException:
            _remove_created(self.created, self.path, time.monotonic())  # nothing half-made is left
            raise

    def _create(self) -> None:
        rel = self.path.strip("/")
        cpuset = self.hierarchies.get("cpuset")
        for mp in sorted({str(m) for m in self.hierarchies.values()}):
            leaf = f"{mp}/{rel}"
            try:
                os.mkdir(leaf)
            except FileExistsError:
                if _read(f"{leaf}/cgroup.procs").strip():
                    raise AlreadyExistsError(f"failed to create cgroup {self.path!r}: it exists and has processes") from None
                continue
            except FileNotFoundError:
                self._make_parents(mp, rel)
                _mkdir(leaf)
            except OSError as err:
                raise SetupError(f"failed to create cgroup {leaf!r}: {err.strerror}") from err
            self.created.append(leaf)
        if cpuset is not None:
            # a new v1 cpuset is empty, and joining an empty cpuset fails with ENOSPC. Every level,
            # top-down, also one that exists: another shim may have made it and not filled it yet
            # (simultaneous first containers of a namespace), and a child copies its parent.
            # Usually the leaf's parent is filled already, and then so is every ancestor (the
            # kernel keeps a v1 cpuset's cpus and mems within its parent's): the leaf alone.
            leaf = f"{cpuset}/{rel}"
            above = leaf.rpartition("/")[0]
            values = [_read(f"{above}/{f}").strip() for f in _CPUSET_FILES]
            if all(values):
                for f, value in zip(_CPUSET_FILES, values, strict=True):
                    _write(f"{leaf}/{f}", value)
                return
            parent = str(cpuset)
            for part in rel.split("/"):
                cur = f"{parent}/{part}"
                for f in _CPUSET_FILES:
                    if not _read(Path(cur, f)).strip():
                        _write(Path(cur, f), _read(Path(parent, f)).strip())
                parent = cur

    def _make_parents(self, mp: str, rel: str) -> None:
        """Make the missing ancestors of ``mp/rel`` (not the leaf), recording them."""
        cur = mp
        for part in rel.split("/")[:-1]:
            cur = f"{cur}/{part}"
            try:
                os.mkdir(cur)
            except FileExistsError:
                continue
            except OSError as err:
                raise SetupError(f"failed to create cgroup {cur!r}: {err.strerror}") from err
            self.created.append(cur)

    def procs_files(self) -> list[str]:
        # plain strings, as in create(): once per task, where pathlib cost ~0.4 ms
        rel = self.path.strip("/")
        return sorted({f"{mp}/{rel}/cgroup.procs" if rel else f"{mp}/cgroup.procs"
                       for mp in map(str, self.hierarchies.values())})

    def apply(self, res: Resources, *, initial: bool = True) -> None:
        writes = v1_writes(res)
        if initial and any(c == "devices" for c, _, _ in writes):
            writes += [("devices", "devices.allow", r.v1_line()) for r in DEFAULT_ALLOWED_DEVICES]
        mem = [w for w in writes if w[1] in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")]
        for controller, name, value in writes:
            if controller not in self.hierarchies:
                raise UnavailableError(f"failed to apply {name} = {value!r}: no cgroup v1 {controller!r} hierarchy")
            target = self.dir(controller) / name
            if not target.exists():
                if name.startswith("memory.memsw"):
                    log.warning("swap accounting is off; ignoring %s = %s", name, value)
                    continue
                raise UnavailableError(f"failed to apply {name} = {value!r}: {str(target)!r} does not exist")
            try:
                _write(target, value)
            except SetupError as err:
                # memsw must stay >= the memory limit: when shrinking, memsw has to go first
                cause = err.__cause__
                if len(mem) == 2 and isinstance(cause, OSError) and cause.errno == errno.EINVAL and \
                        name == "memory.limit_in_bytes":
                    _write(self.dir("memory") / "memory.memsw.limit_in_bytes", mem[1][2])
                    _write(target, value)
                    continue
                raise

    def pids(self) -> list[int]:
        d = self.dir("pids") if "pids" in self.hierarchies else self.dir("memory")
        try:
            return [int(x) for x in _read(d / "cgroup.procs").split()]
        except FileNotFoundError:
            return []

    def freeze(self, timeout: float = 5.0) -> None:
        self._freezer("FROZEN", timeout)

    def thaw(self, timeout: float = 5.0) -> None:
        self._freezer("THAWED", timeout)

    def frozen(self) -> bool:
        return _read(self.dir("freezer") / "freezer.state").strip() == "FROZEN"

    def _freezer(self, state: str, timeout: float) -> None:
        f = self.dir("freezer") / "freezer.state"
        deadline = time.monotonic() + timeout
        while True:
            _write(f, state)
            if _read(f).strip() == state:
                return
            if time.monotonic() > deadline:
                raise SetupError(f"failed to set {str(f)!r} to {state}: still {_read(f).strip()} after {timeout}s")
            time.sleep(0.001)

    def destroy(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        kill_cgroup(self, deadline)
        _remove_created(self.created, self.path, deadline)


@dataclass
class CgroupV2:
    """A container's cgroup in the unified (v2) hierarchy mounted at ``root``."""

    path: str
    root: Path = CGROUP_ROOT
    created: list[str] = field(default_factory=list)

    version = 2

    def dirs(self) -> dict[str, Path]:
        return {"": self.root / self.path.lstrip("/")}

    def dir(self, controller: str = "") -> Path:
        return self.root / self.path.lstrip("/")

    def create(self) -> None:
        leaf = self.dir()
        if (leaf / "cgroup.procs").exists() and _read(leaf / "cgroup.procs").strip():
            raise AlreadyExistsError(f"failed to create cgroup {self.path!r}: it exists and has processes")
        available = set(_read(self.root / "cgroup.controllers").split())
        wanted = available & {"cpu", "cpuset", "memory", "pids", "io", "hugetlb"}
        cur = self.root
        for part in self.path.strip("/").split("/"):
            # enable controllers for the children of every ancestor (no-internal-process rule:
            # ancestors below the root must hold no processes, which we never put there)
            control = cur / "cgroup.subtree_control"
            enabled = set(_read(control).split())
            missing = sorted(wanted - enabled)
            if missing:
                _write(control, " ".join("+" + c for c in missing))
            cur = cur / part
            if not cur.is_dir():
                try:
                    cur.mkdir()
                except FileExistsError:
                    continue  # another shim made it just now: it is that one's to remove
                except OSError as err:
                    raise SetupError(f"failed to create cgroup {str(cur)!r}: {err.strerror}") from err
                self.created.append(str(cur))

    def procs_files(self) -> list[str]:
        return [str(self.dir() / "cgroup.procs")]

    def apply(self, res: Resources, *, initial: bool = True) -> None:
        if res.devices:
            # v2 device control is an eBPF program; runwasm does not build one yet
            log.warning("cgroup v2: ignoring %d linux.resources.devices rules (no eBPF device filter)",
                        len(res.devices))
        for controller, name, value in v2_writes(res):
            target = self.dir() / name
            if not target.exists():
                raise UnavailableError(f"failed to apply {name} = {value!r}: cgroup v2 controller "
                                       f"{controller!r} is not enabled at {str(self.dir())!r}")
            _write(target, value)

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in _read(self.dir() / "cgroup.procs").split()]
        except FileNotFoundError:
            return []

    def freeze(self, timeout: float = 5.0) -> None:
        self._freeze("1", timeout)

    def thaw(self, timeout: float = 5.0) -> None:
        self._freeze("0", timeout)

    def frozen(self) -> bool:
        return _read(self.dir() / "cgroup.freeze").strip() == "1"

    def _freeze(self, value: str, timeout: float) -> None:
        _write(self.dir() / "cgroup.freeze", value)
        deadline = time.monotonic() + timeout
        while True:
            events = dict(line.split() for line in _read(self.dir() / "cgroup.events").splitlines() if line)
            if events.get("frozen", value) == value:
                return
            if time.monotonic() > deadline:
                raise SetupError(f"failed to set cgroup.freeze = {value} in {str(self.dir())!r}: timed out")
            time.sleep(0.001)

    def destroy(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        kill_cgroup(self, deadline)
        _remove_created(self.created, self.path, deadline)


Cgroup = CgroupV1 | CgroupV2


def kill_cgroup(cg: Cgroup, deadline: float) -> None:
    """SIGKILL every process in the cgroup (frozen first, so none can fork in between) and wait
    until it is empty or ``deadline`` passes."""
    try:
        if not cg.pids():  # the common case (the task's processes are gone): one read, no stat
            return
    except UnavailableError:  # no v1 hierarchy to list them from: as below, decided by the freezer
        pass
    if not cg.dir("freezer" if cg.version == 1 else "").exists():
        return
    if not cg.pids():
        return
    try:
        cg.freeze()
    except (SetupError, UnavailableError) as err:
        log.warning("failed to freeze cgroup %r before killing it: %s", cg.path, err)
    for pid in cg.pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        cg.thaw()
    except (SetupError, UnavailableError) as err:
        log.warning("failed to thaw cgroup %r after killing it: %s", cg.path, err)
    while cg.pids() and time.monotonic() < deadline:
        time.sleep(0.002)


def detect(path: str, root: Path = CGROUP_ROOT) -> Cgroup:
    """Pick the hierarchy: v2 when ``root`` itself is a cgroup2 mount, else v1 (hybrid counts as v1)."""
    if (root / "cgroup.controllers").exists():
        return CgroupV2(path=path, root=root)
    hier = v1_hierarchies()
    if not hier:
        raise UnavailableError(f"failed to find cgroups under {str(root)!r}: neither v2 nor v1 hierarchies mounted")
    return CgroupV1(path=path, hierarchies=hier)
