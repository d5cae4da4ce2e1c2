"""A task's own cgroup: the container-wide operations shared by native containers and Wasm tasks.

``TaskCgroup`` wraps one ``Cgroup`` (v1 or v2) and adds what both back-ends need: attaching a
pid from the parent, kill-all under the freezer, ``Update`` from an OCI LinuxResources
document, metrics, the OOM watcher, a CPU usage sampler (nanocores) and JSON (de)serialization
so a fresh process can destroy the cgroup after the shim was SIGKILLed.

``CgroupSandbox`` is the Wasm task's whole host-side footprint: a ``TaskCgroup`` plus a state
file ``<state_dir>/wasm-state.json``::

    sb = CgroupSandbox.create(state_dir, task_id, namespace, spec.linux)   # cgroup made, limits set
    sb.cg.attach(pid)                                                       # after the zygote spawn
    sb.cg.pids() / kill_all(sig) / pause() / resume() / update(doc) / stats() / oom_watcher()
    sb.destroy()                                                            # idempotent
    CgroupSandbox.load(state_dir).destroy()                                 # after a SIGKILLed shim
    destroy_recorded(state_dir)                                             # same, no-op when absent

CPU usage in nanocores: ``TaskCgroup.sample_cpu()`` reads one counter file and keeps it when
the previous kept sample is at least ``CPU_SAMPLE_INTERVAL`` old; ``cpu_nanocores()`` is the
rate between the last two kept samples (None until there are two). No thread: a caller takes
samples from a periodic timer (every second is plenty; containerd 2.3 collects every 10 s). The
shim does not sample yet: its Stats report the cumulative counters only.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runwasm.linux.cgroups import CGROUP_ROOT, Cgroup, CgroupV1, CgroupV2, detect, validate_path
from runwasm.linux.errors import InvalidArgumentError, NotFoundError, SetupError
from runwasm.linux.oom import OomWatcher, open_oom_watcher
from runwasm.linux.record import write_record
from runwasm.linux.resources import parse_resources

if TYPE_CHECKING:  # types only: delete's cleanup path must not pay for the spec model import
    from runwasm.linux.stats import Metrics  # nor a server before its first Stats (~3 ms at import)
    from runwasm.oci.runtime_spec import Linux

log = logging.getLogger(__name__)

CPU_SAMPLE_INTERVAL_NS = 1_000_000_000
WASM_STATE_FILE = "wasm-state.json"
RUNWASM_TREE = "runwasm"  # first component of the default cgroup path: runwasm's own subtree


def default_cgroup_path(namespace: str, task_id: str, linux: Linux | None) -> str:
    """``linux.cgroupsPath`` when set, else ``/runwasm/<namespace>/<id>``; validated."""
    return validate_path(linux.cgroups_path if linux and linux.cgroups_path else f"/{RUNWASM_TREE}/{namespace}/{task_id}")


def cgroup_to_dict(cg: Cgroup) -> dict[str, Any]:
    d: dict[str, Any] = {"version": cg.version, "path": cg.path, "created": list(cg.created)}
    if isinstance(cg, CgroupV1):
        d["hierarchies"] = {k: str(v) for k, v in cg.hierarchies.items()}
    else:
        d["root"] = str(cg.root)
    return d


def cgroup_from_dict(d: Mapping[str, Any]) -> Cgroup:
    if d["version"] == 1:
        return CgroupV1(path=d["path"], hierarchies={k: Path(v) for k, v in d["hierarchies"].items()},
                        created=list(d["created"]))
    return CgroupV2(path=d["path"], root=Path(d["root"]), created=list(d["created"]))


@dataclass
class TaskCgroup:
    """One task's cgroup and the operations the Task service needs on it."""

    cgroup: Cgroup
    _cpu: list[tuple[int, int]] = field(default_factory=list)  # kept (monotonic ns, usage ns), last two

    @classmethod
    def create(cls, path: str, resources: Mapping[str, Any] | None, root: Path = CGROUP_ROOT) -> TaskCgroup:
        """Make the cgroup and apply ``resources`` (OCI LinuxResources); on a failed apply the
        cgroup is removed again before the error propagates."""
        res = parse_resources(resources)
        tc = cls(detect(path, root))
        tc.cgroup.create()
        try:
            tc.cgroup.apply(res)
        except Exception:
            tc.destroy()
            raise
        return tc

    def attach(self, pid: int) -> None:
        """Move ``pid`` into the cgroup (every v1 hierarchy); no-op when it is there already."""
        cg = self.cgroup
        if pid in cg.pids():
            return
        for procs in cg.procs_files():
            try:
                Path(procs).write_text(str(pid))
            except ProcessLookupError:
                raise NotFoundError(f"failed to attach pid {pid} to cgroup {cg.path!r}: no such process") from None
            except OSError as err:
                raise SetupError(f"failed to attach pid {pid} to {procs!r}: {err}") from err

    def pids(self) -> list[int]:
        return self.cgroup.pids()

    def kill_all(self, sig: int) -> int:
        """Signal every process in the cgroup (frozen around SIGKILL so none forks away);
        returns how many were signalled."""
        cg = self.cgroup
        frozen = False
        if sig == signal.SIGKILL and not cg.frozen():
            cg.freeze()
            frozen = True
        n = 0
        try:
            for pid in cg.pids():
                try:
                    os.kill(pid, sig)
                    n += 1
                except ProcessLookupError:
                    pass
        finally:
            if frozen or (sig == signal.SIGKILL and cg.frozen()):
                cg.thaw()
        return n

    def update(self, resources_json: bytes | str | Mapping[str, Any]) -> None:
        """Apply an OCI LinuxResources document (Update RPC)."""
        doc = json.loads(resources_json) if isinstance(resources_json, bytes | str) else resources_json
        if not isinstance(doc, dict):
            raise InvalidArgumentError(f"failed to update resources: expected a JSON object, got {doc!r}")
        self.cgroup.apply(parse_resources(doc, "resources"), initial=False)

    def pause(self) -> None:
        self.cgroup.freeze()

    def resume(self) -> None:
        self.cgroup.thaw()

    def stats(self) -> Metrics:
        from runwasm.linux.stats import read_metrics

        return read_metrics(self.cgroup)

    def oom_watcher(self) -> OomWatcher:
        return open_oom_watcher(self.cgroup)

    def sample_cpu(self, now_ns: int | None = None) -> None:
        """Read the CPU usage counter; keep it when the last kept sample is >= 1 s old."""
        t = time.monotonic_ns() if now_ns is None else now_ns
        if self._cpu and t - self._cpu[-1][0] < CPU_SAMPLE_INTERVAL_NS:
            return
        usage = cpu_usage_ns(self.cgroup)
        self._cpu = [*self._cpu[-1:], (t, usage)]

    def cpu_nanocores(self) -> int | None:
        """CPU usage (1e9 = one core busy) between the last two kept samples; None before two."""
        if len(self._cpu) < 2:
            return None
        (t0, u0), (t1, u1) = self._cpu
        return max(0, u1 - u0) * 10**9 // (t1 - t0)

    def destroy(self) -> list[str]:
        """Kill what is left and remove the directories ``create`` made; returns the ones that
        could not be removed (empty when all is gone). Idempotent. Empty ancestors inside
        runwasm's own tree (``/runwasm/<namespace>``, ``/runwasm``) are removed too, whoever
        made them, so the last task out of a namespace leaves nothing behind."""
        self.cgroup.destroy()
        _remove_empty_runwasm_ancestors(self.cgroup)
        return list(self.cgroup.created)

    def to_dict(self) -> dict[str, Any]:
        return cgroup_to_dict(self.cgroup)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskCgroup:
        return cls(cgroup_from_dict(d))


def _remove_empty_runwasm_ancestors(cg: Cgroup) -> None:
    parts = cg.path.strip("/").split("/")
    if parts[0] != RUNWASM_TREE or cg.created:
        return  # not our tree, or the leaf is still there
    bases = _bases(cg)
    for depth in range(len(parts) - 1, 0, -1):
        rel = "/".join(parts[:depth])
        for base in list(bases):
            try:
                os.rmdir(f"{base}/{rel}")
            except FileNotFoundError:
                pass
            except OSError as err:  # EBUSY: another task's cgroup is still below it
                log.debug("cgroup %r kept: %s", f"{base}/{rel}", err)
                bases.discard(base)  # so its ancestors in this hierarchy are kept too: no need to try


def _bases(cg: Cgroup) -> set[Path]:
    return set(cg.hierarchies.values()) if isinstance(cg, CgroupV1) else {cg.root}


def cpu_usage_ns(cg: Cgroup) -> int:
    """Total CPU time of the cgroup in ns (one small file read); 0 when unreadable."""
    try:
        if isinstance(cg, CgroupV1):
            return int(cg.dir("cpuacct").joinpath("cpuacct.usage").read_text())
        for line in (cg.dir() / "cpu.stat").read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == "usage_usec":
                return int(v) * 1000
    except (OSError, ValueError) as err:
        log.debug("failed to read CPU usage of cgroup %r: %s", cg.path, err)
    return 0


@dataclass
class CgroupSandbox:
    """A Wasm task's cgroup plus its state record in ``state_dir`` (see module docstring)."""

    state_dir: Path
    task_id: str
    cg: TaskCgroup

    @classmethod
    def create(cls, state_dir: Path, task_id: str, namespace: str, linux: Linux | None, *,
               root: Path = CGROUP_ROOT) -> CgroupSandbox:
        """Create the cgroup (``linux.cgroupsPath`` or ``/runwasm/<namespace>/<id>``), record it,
        then apply ``linux.resources``. Raises InvalidArgumentError, AlreadyExistsError,
        UnavailableError or SetupError; nothing is left behind on failure."""
        path = default_cgroup_path(namespace, task_id, linux)
        res = parse_resources(linux.resources if linux else None)  # validate before creating
        sb = cls(state_dir, task_id, TaskCgroup(detect(path, root)))
        sb.cg.cgroup.create()
        try:
            sb._save()  # recorded before anything can fail, so delete finds it
            sb.cg.cgroup.apply(res)
        except Exception:
            sb.destroy()
            raise
        return sb

    def destroy(self) -> None:
        """Kill what is left in the cgroup, remove it and drop the state file. Idempotent;
        raises SetupError (state kept for a retry) when a directory could not be removed."""
        leftover = self.cg.destroy()
        if leftover:
            self._save()
            raise SetupError(f"failed to remove cgroups of Wasm task {self.task_id!r}: {leftover}")
        try:
            (self.state_dir / WASM_STATE_FILE).unlink()
        except FileNotFoundError:
            pass

    @classmethod
    def load(cls, state_dir: Path) -> CgroupSandbox:
        """Rebuild from ``<state_dir>/wasm-state.json`` (NotFoundError when absent)."""
        try:
            d = json.loads((state_dir / WASM_STATE_FILE).read_text())
        except FileNotFoundError:
            raise NotFoundError(f"failed to load Wasm task state in {str(state_dir)!r}: no {WASM_STATE_FILE}") from None
        return cls(state_dir, d["task_id"], TaskCgroup.from_dict(d["cgroup"]))

    def _save(self) -> None:
        path = f"{self.state_dir}/{WASM_STATE_FILE}"
        data = json.dumps({"task_id": self.task_id, "cgroup": self.cg.to_dict()}).encode()
        try:
            write_record(path, data)  # in place (runwasm.linux.record): once or twice per task
        except FileNotFoundError:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            write_record(path, data)


def destroy_recorded(state_dir: Path) -> bool:
    """``delete``'s Wasm part: destroy the cgroup a dead shim's Wasm task left, if any.
    Returns True when something was recorded; errors are logged, never raised."""
    try:
        CgroupSandbox.load(state_dir).destroy()
    except NotFoundError:
        return False
    except (OSError, ValueError, KeyError) as err:
        log.warning("failed to clean up Wasm task cgroup recorded in %r: %s", str(state_dir), err)
    except SetupError as err:
        log.warning("%s", err)
    return True
