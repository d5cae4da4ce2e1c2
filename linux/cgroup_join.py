"""How a process moves ITSELF into a cgroup: kept apart from ``cgroups.py`` (whose resource
model takes ~10 ms to import) because the zygote preloads it for every workload."""

from __future__ import annotations

import os


def self_join_file(procs_file: str) -> str:
    """The file the calling process writes ``0`` into to move itself into the cgroup whose
    ``cgroup.procs`` is ``procs_file``: on cgroup v1, when the process has a single thread, the
    cgroup's ``tasks`` file; else ``procs_file`` itself.

    Same effect, far cheaper: a write to ``cgroup.procs`` (or of another pid) takes the kernel's
    global threadgroup lock for writing, which first waits for an RCU grace period (measured
    under ``runwasm stress``: ~9 ms for the first of a task's nine v1 joins); moving the current
    thread through ``tasks`` skips that lock (``cgroup_procs_write_start``), and a process of
    one thread is that thread. Threads made afterwards inherit the cgroup. cgroup v2 has no
    ``tasks`` file (and ``cgroup.threads`` only works in threaded subtrees), so it keeps
    ``cgroup.procs``."""
    d, _, name = procs_file.rpartition("/")
    if name != "cgroup.procs" or not os.path.exists(f"{d}/tasks"):
        return procs_file
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        return procs_file
    return f"{d}/tasks" if threads == 1 else procs_file
