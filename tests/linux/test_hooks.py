"""OCI hooks on the real kernel: every hook kind writes its state JSON (stdin) to a marker file
and appends its name to an order log; createRuntime/createContainer run host scripts,
startContainer runs a script inside the container's rootfs, poststart after the user process is
executed, poststop when the container is destroyed (deleted). A failing createRuntime hook
fails create."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.linux.harness import Bundle, Started, base_config

pytestmark = pytest.mark.privileged

HOOK = """#!/bin/sh
# $1 = hook kind, $2 = marker directory; the container state arrives on stdin
cat > "$2/$1.json"
echo "$1 $HOOK_TAG" >> "$2/order"
"""
KINDS = ("createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def _hook(path: str, kind: str, markers: str) -> dict[str, Any]:
    return {"path": path, "args": ["hook.sh", kind, markers], "env": ["PATH=/bin:/usr/bin", f"HOOK_TAG=tag-{kind}"],
            "timeout": 10}


def test_hooks_run_in_order_with_state_and_poststop_on_delete() -> None:
    host_dir = Path(tempfile.mkdtemp(prefix="rwhooks-"))
    markers = host_dir / "markers"
    markers.mkdir()
    script = host_dir / "hook.sh"
    script.write_text(HOOK)
    script.chmod(0o755)
    cfg = base_config(["sh", "-c", "echo user-process >> /markers/order"])
    cfg["mounts"].append({"destination": "/markers", "type": "bind", "source": str(markers),
                          "options": ["rbind", "rw"]})
    # startContainer runs in the container after pivot_root: its path and the marker directory
    # are container paths; every other hook runs a host path in the runtime's mount namespace
    cfg["hooks"] = {kind: [_hook("/bin/hook.sh" if kind == "startContainer" else str(script), kind,
                                 "/markers" if kind == "startContainer" else str(markers))]
                    for kind in KINDS}
    b = Bundle(cfg)
    shutil.copy2(script, b.dir / "rootfs" / "bin" / "hook.sh")
    try:
        s = Started(b.launch())
        assert s.msg["type"] == "ready", s.msg
        b.container.attach(s.pid)
        assert (markers / "order").read_text().split("\n")[:2] == ["createRuntime tag-createRuntime",
                                                                  "createContainer tag-createContainer"]
        s.start()
        # the workload closes its control socket right before execve: poststart runs after
        # the user process was executed, as the runtime spec requires
        assert s.ctl.recv(100) == b""
        b.container.run_poststart()
        r = s.wait()
        assert r.status == 0, r.stderr
        assert not (markers / "poststop.json").exists()
        b.container.destroy()
        order = [line.split()[0] for line in (markers / "order").read_text().splitlines()]
        assert order == ["createRuntime", "createContainer", "startContainer", "user-process",
                         "poststart", "poststop"] or \
            order == ["createRuntime", "createContainer", "startContainer", "poststart", "user-process",
                      "poststop"], order
        assert "tag-startContainer" in (markers / "order").read_text()
        states = {k: json.loads((markers / f"{k}.json").read_text()) for k in KINDS}
        for kind, st in states.items():
            assert st["id"] == b.cid, kind
            assert st["bundle"] == str(b.dir), kind
            assert st["ociVersion"], kind
        assert [states[k]["status"] for k in KINDS] == ["creating", "creating", "running", "running", "stopped"]
        assert states["poststart"]["pid"] == s.pid
        assert states["createRuntime"]["pid"] == s.pid
    finally:
        b.cleanup()
        shutil.rmtree(host_dir, ignore_errors=True)


def test_failing_create_runtime_hook_fails_create() -> None:
    cfg = base_config(["true"])
    cfg["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}],
                    "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 0"]}]}
    b = Bundle(cfg)
    try:
        s = Started(b.launch())
        assert s.msg["type"] == "error", s.msg
        assert "hooks.createRuntime[0]" in s.msg["message"], s.msg
        assert "exit status 3" in s.msg["message"], s.msg
        assert "nope" in s.msg["message"], s.msg
        s.wait()
    finally:
        b.cleanup()
    assert not os.path.exists(b.dir)
