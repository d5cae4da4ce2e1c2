"""The template's imports (``shim/template/process.py``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


def _run_probe(probe: str, tmp_path: Path, done: Callable[[list[dict[str, Any]]], bool], what: str) -> list[dict[str, Any]]:
    """Run ``probe`` (a patched ``template_main``) with a private template directory, connect to
    its socket once (a `start` child is forked), wait until ``done`` holds for the events it
    recorded (JSON lines in ``PROBE_RECORD``), stop it and return them. ``what``: the failure
    message when ``done`` never holds."""
    from runwasm.shim.template import key

    record = tmp_path / "record"
    env = {**os.environ, key.ENV_DIR: str(tmp_path / "tpl"), "PROBE_RECORD": str(record)}

    def events() -> list[dict[str, Any]]:
        return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []

    proc = subprocess.Popen([sys.executable, "-c", probe], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        sock_path = key.socket_path(env)
        deadline = time.monotonic() + 60
        while not os.path.exists(sock_path):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no template socket"
            time.sleep(0.001)
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.connect(sock_path)
            while not done(events()):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, f"{what}: {events()}"
                time.sleep(0.01)
    finally:
        proc.terminate()  # SIGTERM: the template removes its socket and exits
        proc.wait(30)
    return events()


def test_asyncio_is_imported_without_ssl_which_stays_importable() -> None:
    """asyncio would map libssl and libcrypto into the template and every process forked from
    it; ``ssl`` itself must still import for code that wants it (the registry client)."""
    code = """
import sys
from runwasm.shim.template import process
process.import_asyncio_without_tls()
import asyncio, asyncio.base_events, asyncio.sslproto
assert "ssl" not in sys.modules, "ssl was imported"
assert asyncio.base_events.ssl is None and asyncio.sslproto.ssl is None
maps = open("/proc/self/maps").read()
assert "libssl" not in maps, "libssl is mapped"
import ssl
assert ssl.OPENSSL_VERSION
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


_WARMUP_PROBE = """
import gc, json, os, socket, sys, time
from runwasm.shim.common import node_handoff
from runwasm.shim.template import process, server

record = os.environ["PROBE_RECORD"]

def note(**kv):
    with open(record, "a") as f:
        f.write(json.dumps(kv) + "\\n")

real_listen, real_preload = node_handoff.listen_in_place, process._preload
listening = False

def listen(*args, **kwargs):
    global listening
    note(event="listen", modules=sorted(sys.modules))
    listening = True
    return real_listen(*args, **kwargs)

def preload(names):
    if listening and names:  # the warm-up, slowed down: the request below surely comes meanwhile
        time.sleep(0.02)
        note(event="import", name=names[0])
    real_preload(names)

def serve(channel, close):  # the template serving a child's server fork (not forking here)
    if not channel.recv(256):
        return False
    note(event="fork request served", missing=[m for m in process.PRELOAD if m not in sys.modules],
         collecting=gc.isenabled())
    return False

def child(conn, install, lock, channel, close):  # a start child asking for its server at once
    note(event="fork request sent")
    channel.send(b"fork")
    channel.recv(256)
    os._exit(0)

node_handoff.listen_in_place, process._preload = listen, preload
server.serve_fork_request, process._child = serve, child
sys.exit(process.template_main())
"""


def test_the_template_listens_before_the_servers_imports_and_forks_servers_only_after_them(tmp_path: Path) -> None:
    """The first `start` after boot runs in a template child while the template imports what a
    server needs; that start's server fork waits for the end of those imports (every server is
    forked from a complete template, with collections back on)."""
    events = _run_probe(_WARMUP_PROBE, tmp_path, lambda got: any(e["event"] == "fork request served" for e in got),
                        "the fork request was not served")
    kinds = [e["event"] for e in events]
    listen = events[0]
    assert listen["event"] == "listen"
    assert "runwasm.shim.entry.start" in listen["modules"]
    assert "runwasm.shim.server.task" not in listen["modules"]
    assert "asyncio" not in listen["modules"]
    sent, served = kinds.index("fork request sent"), kinds.index("fork request served")
    assert "import" in kinds[sent:served], "the request did not arrive during the imports: the test proved nothing"
    assert events[served]["missing"] == []
    assert events[served]["collecting"] is True
    assert "import" not in kinds[served:]


_QUIET_PROBE = """
import json, os, sys, time
from runwasm.shim.template import process, server

record = os.environ["PROBE_RECORD"]

def note(**kv):
    with open(record, "a") as f:
        f.write(json.dumps({**kv, "at": time.monotonic()}) + "\\n")

real_preload = process._preload

def preload(names):
    if names and names[0] in process.PRELOAD_LATER:
        note(event="later import", name=names[0])
    elif len(names) == 1:  # the warm-up after listening, slowed down: the request surely comes meanwhile
        time.sleep(0.02)
    real_preload(names)

def serve(channel, close):  # the template serving a child's server fork (answered, not forked)
    if not channel.recv(256):
        return False
    note(event="fork request served")
    channel.send(b"pid 0")
    return True

def child(conn, install, lock, channel, close):  # a start child: one server fork, then done
    channel.send(b"fork")
    channel.recv(256)
    os._exit(0)

process._preload, server.serve_fork_request, process._child = preload, serve, child
sys.exit(process.template_main())
"""


def test_no_later_import_while_a_server_forked_just_now_starts(tmp_path: Path) -> None:
    """``PRELOAD_LATER`` waits ``QUIET_AFTER_FORK`` after the first server fork (they slowed the
    start-up of the first container's server even at nice 19), and is imported afterwards."""
    from runwasm.shim.template import process

    got = _run_probe(_QUIET_PROBE, tmp_path,
                     lambda got: sum(e["event"] == "later import" for e in got) >= len(process.PRELOAD_LATER),
                     "PRELOAD_LATER was not imported")
    served = [e for e in got if e["event"] == "fork request served"]
    assert len(served) == 1
    later = [e for e in got if e["event"] == "later import"]
    assert got.index(served[0]) < got.index(later[0]), "the request came after the later imports: the test proved nothing"
    first = min(float(str(e["at"])) for e in later)
    assert first >= float(str(served[0]["at"])) + process.QUIET_AFTER_FORK, (served, later)
