"""OCI hooks: run a hook list with the container state on stdin, honouring ``timeout``.

Where each list runs (runtime spec config.md#posix-platform-hooks):
- ``prestart`` (deprecated) and ``createRuntime``: in the runtime namespace during create,
  after namespaces exist and before pivot_root: ``init.py`` runs them from the workload before
  it joins the container's mount/net/... namespaces (the pid namespace is already the
  container's one when the zygote made it);
- ``createContainer``: in the container namespaces before pivot_root (``init.py``);
- ``startContainer``: in the container, after ``start`` and before execve (``init.py``);
- ``poststart``: in the runtime namespace after start: ``LinuxContainer.run_poststart()``;
- ``poststop``: after the container is deleted: ``LinuxContainer.destroy()``.
A failing hook fails create/start (createRuntime, createContainer, startContainer, prestart);
poststart and poststop failures are logged only.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Mapping

from runwasm.linux.errors import SetupError
from runwasm.oci.runtime_spec import Hook

log = logging.getLogger(__name__)


def state_json(container_id: str, status: str, pid: int, bundle: str, annotations: Mapping[str, str]) -> bytes:
    return json.dumps({"ociVersion": "1.0.2", "id": container_id, "status": status, "pid": pid,
                       "bundle": bundle, "annotations": dict(annotations)}).encode()


def run(kind: str, hooks: tuple[Hook, ...], state: bytes) -> None:
    """Run ``hooks`` in order; the first failure raises SetupError naming the hook."""
    for i, h in enumerate(hooks):
        argv = list(h.args) or [h.path]
        try:
            proc = subprocess.run(argv, executable=h.path, input=state, env=dict(e.split("=", 1) for e in h.env if "=" in e),
                                  capture_output=True, timeout=h.timeout, check=False, close_fds=True)
        except subprocess.TimeoutExpired as err:
            raise SetupError(f"failed to run hooks.{kind}[{i}] {h.path!r}: timed out after {h.timeout}s") from err
        except OSError as err:
            raise SetupError(f"failed to run hooks.{kind}[{i}] {h.path!r}: [errno {err.errno}] "
                             f"{os.strerror(err.errno or 0)}") from err
        if proc.returncode != 0:
            raise SetupError(f"failed to run hooks.{kind}[{i}] {h.path!r}: exit status {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace').strip()[:500]}")


def run_logged(kind: str, hooks: tuple[Hook, ...], state: bytes) -> None:
    """Like ``run`` but a failure is only logged (poststart, poststop)."""
    try:
        run(kind, hooks, state)
    except SetupError as err:
        log.warning("%s", err)
