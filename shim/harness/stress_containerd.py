"""``runwasm stress --containerd ADDRESS``: the same task loop as ``shim/harness/stress.py``, but
through a real containerd's gRPC API (Containers and Tasks services), so containerd's own work
per task (its metadata store, bundle, ``shim start``/``delete`` execs, events) is in the figure.

Per task: Containers.Create (untimed, like the harness's bundle), then Tasks.Create+Start
(timed together), then Tasks.Wait+Delete (timed together), then Containers.Delete (untimed).
Every container carries the same ``io.containerd.runwasm.v1.group`` annotation, so containerd
hands them all to one shim server; an anchor container whose task is created and never started
keeps that server alive between tasks. The module is copied once into a host directory that
every container's spec names as its (absolute) ``root.path``: no image, no snapshot.

Calls run on a thread pool of ``inflight`` workers over one grpc channel (grpc's sync client
is thread-safe). Everything the run made (containers, tasks, the directory) is removed at the
end, also after a failure (a task still running then is left to ``ctr task kill``; the run's
containers are named ``stress<pid>-...``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runwasm.shim.harness.stress import GROUP_ANNOTATION, CpuSampler, StressError, StressResult

EXECUTOR = "the runtime's default (no Executor option or annotation set; an in-process fallback is logged in containerd's log)"

RUNTIME = "io.containerd.runwasm.v1"
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"


class _Api:
    """The four task calls and two container calls, over ``ContainerdClient``'s channel."""

    def __init__(self, address: str, namespace: str, timeout: float) -> None:
        from runwasm.shim.server.containerd_api import ContainerdClient

        self.client = ContainerdClient(address, namespace, timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def create_container(self, cid: str, spec: dict[str, Any], runtime: str) -> None:
        from google.protobuf import any_pb2

        from runwasm.shim.api.services.containers.v1 import containers_pb2 as c

        container = c.Container(id=cid, runtime=c.Container.Runtime(name=runtime),
                                spec=any_pb2.Any(type_url=SPEC_TYPE_URL, value=json.dumps(spec).encode()))
        self.client.unary("/containerd.services.containers.v1.Containers/Create",
                           c.CreateContainerRequest(container=container), c.CreateContainerResponse,
                           f"create container {cid!r}")

    def delete_container(self, cid: str) -> None:
        from google.protobuf import empty_pb2

        from runwasm.shim.api.services.containers.v1 import containers_pb2 as c

        self.client.unary("/containerd.services.containers.v1.Containers/Delete",
                           c.DeleteContainerRequest(id=cid), empty_pb2.Empty, f"delete container {cid!r}")

    def task(self, method: str, cid: str) -> Any:
        from runwasm.shim.api.services.tasks.v1 import tasks_pb2 as t

        req, resp = {"Create": (t.CreateTaskRequest, t.CreateTaskResponse),
                     "Start": (t.StartRequest, t.StartResponse),
                     "Wait": (t.WaitRequest, t.WaitResponse),
                     "Delete": (t.DeleteTaskRequest, t.DeleteResponse)}[method]
        return self.client.unary(f"/containerd.services.tasks.v1.Tasks/{method}", req(container_id=cid), resp,
                                  f"{method.lower()} task {cid!r}")


def _spec(rootfs: Path, module_name: str, group: str) -> dict[str, Any]:
    from runwasm.shim.harness.bundle import base_spec

    spec = base_spec([f"/{module_name}"], [], annotations={GROUP_ANNOTATION: group})
    spec["root"] = {"path": str(rootfs), "readonly": True}
    return spec


def run_stress_containerd(address: str, namespace: str, module: Path, tasks: int, inflight: int, *,
                          runtime: str = RUNTIME, expect_status: int = 0, timeout: float = 60.0) -> StressResult:
    """``tasks`` Wasm tasks of ``module`` through containerd at ``address`` (namespace
    ``namespace``), ``inflight`` at once, after one untimed warm-up task. Raises StressError
    when the anchor or the warm-up fails (the message says which call and containerd's error)."""
    if tasks < 1 or inflight < 1:
        raise ValueError(f"stress needs -n >= 1 and -p >= 1, got -n {tasks} -p {inflight}")
    if not module.is_file():
        raise ValueError(f"module {str(module)!r} does not exist or is not a file")
    tag = f"stress{os.getpid()}-{time.monotonic_ns() % 10**6}"
    work = Path(tempfile.mkdtemp(prefix=f"runwasm-{tag}-"))
    rootfs = work / "rootfs"
    rootfs.mkdir()
    shutil.copyfile(module, rootfs / module.name)
    spec = _spec(rootfs, module.name, tag)
    api = _Api(address, namespace, timeout)
    made: set[str] = set()
    counter = 0

    def one() -> tuple[float, float]:
        nonlocal counter
        counter += 1
        cid = f"{tag}-{counter}"
        api.create_container(cid, spec, runtime)
        made.add(cid)
        t0 = time.perf_counter()
        api.task("Create", cid)
        api.task("Start", cid)
        t1 = time.perf_counter()
        waited = api.task("Wait", cid)
        api.task("Delete", cid)
        t2 = time.perf_counter()
        api.delete_container(cid)
        made.discard(cid)
        if waited.exit_status != expect_status:
            raise RuntimeError(f"task {cid} exited {waited.exit_status}, expected {expect_status}")
        return t1 - t0, t2 - t1

    anchor = f"{tag}-anchor"
    try:
        try:
            api.create_container(anchor, spec, runtime)
            made.add(anchor)
            anchor_pid = int(api.task("Create", anchor).pid)
            one()  # warm-up: the shim's server is there, the module cache filled
        except Exception as err:
            raise StressError(f"the warm-up task failed, nothing timed: {err}") from err
        sampler = _sampler(anchor_pid)
        with ThreadPoolExecutor(max_workers=inflight) as pool:
            t0 = time.perf_counter()
            futures = [pool.submit(one) for _ in range(tasks)]
            done: list[tuple[float, float] | BaseException] = []
            for f in futures:
                failed = f.exception()
                done.append(failed if failed is not None else f.result())
            seconds = time.perf_counter() - t0
        cpu = sampler.per_task(tasks) if sampler is not None else ()
    finally:
        try:
            for cid in sorted(made):
                _remove(api, cid)
        finally:
            api.close()
        shutil.rmtree(work, ignore_errors=True)
    ok = [r for r in done if isinstance(r, tuple)]
    errors = tuple(repr(r) for r in done if isinstance(r, BaseException))
    return StressResult(tasks, inflight, tasks - len(ok), errors, seconds,
                        tuple(a for a, _ in ok), tuple(b for _, b in ok), cpu, EXECUTOR, "containerd's state directory")


def _sampler(anchor_pid: int) -> CpuSampler | None:
    """CPU accounting of the run (``CpuSampler``): the shim server is the anchor workload's
    parent (workloads are the server's children); "harness" is this client, containerd itself is
    not counted. None when the anchor's parent cannot be read (a containerd on another host)."""
    try:
        with open(f"/proc/{anchor_pid}/stat", "rb") as f:
            server = int(f.read().rpartition(b")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return CpuSampler(server, {anchor_pid})


def _remove(api: _Api, cid: str) -> None:
    """Clean-up of a container a failed task or the anchor left: its task killed and deleted
    (NotFound: there is none), then the container."""
    from runwasm.shim.common.errors import NotFoundError

    try:
        api.task("Delete", cid)
    except NotFoundError:
        pass
    api.delete_container(cid)
