"""The generated shim launcher: an isolated interpreter without `site` that still finds runwasm."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _generate(dest: Path) -> str:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_launcher.py"), str(dest)], check=True,
                   capture_output=True)
    return dest.read_text()


def test_launcher_runs_the_shim_under_python_IS(tmp_path: Path) -> None:
    dest = tmp_path / "containerd-shim-runwasm-v1"
    text = _generate(dest)
    assert text.splitlines()[0] == f"#!{sys.executable} -IS"
    out = subprocess.run([str(dest), "-v"], capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    assert "Runtime:  io.containerd.runwasm.v1" in out.stdout


def test_launcher_imports_neither_site_nor_heavy_modules_for_delete(tmp_path: Path) -> None:
    dest = tmp_path / "containerd-shim-runwasm-v1"
    _generate(dest)
    probe = tmp_path / "probe.py"
    # run the launcher's code in-process, then report what got imported
    probe.write_text(
        "import runpy, sys\n"
        "sys.argv = [sys.argv[1], '-v']\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('site', 'asyncio', 'google.protobuf', 'wasmtime') if m in sys.modules),"
        " sys.flags.no_site, file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-IS", str(probe), str(dest)], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "RUNWASM_TEMPLATE": "off"})
    assert res.stderr.strip().splitlines()[-1] == "[] 1"


# --- the native front (scripts/launcher.c) ---------------------------------------------------

def _generate_native(tmp_path: Path, **env: str) -> tuple[Path, Path]:
    dest, script = tmp_path / "bin" / "containerd-shim-runwasm-v1", tmp_path / "libexec" / "containerd-shim-runwasm-v1"
    dest.parent.mkdir()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_launcher.py"), str(dest), str(script)], check=True,
                   capture_output=True, env={**os.environ, **env})
    return dest, script


def _fake_template(directory: Path, reply: bytes) -> tuple[socket.socket, threading.Thread, list[bytes]]:
    """A listener at this installation's template socket answering every request with ``reply``."""
    from runwasm.shim.template import key

    lst = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    lst.bind(str(directory / f"template-{key.install_key()}.sock"))
    lst.listen(4)
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            with conn:
                msg, fds, _f, _a = socket.recv_fds(conn, 256 * 1024, 8)
                for fd in fds:
                    os.close(fd)
                seen.append(msg)
                conn.send(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lst, t, seen


needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc): the Python launcher is used")


@needs_cc
def test_native_front_sends_what_the_python_launcher_sends(tmp_path: Path) -> None:
    """Same request as shim/template/client.py's (key, namespaces, cwd, umask, argv, environment), fds
    0-2 attached, and the template child's exit code becomes the launcher's."""
    from runwasm.shim.template import client, key

    dest, script = _generate_native(tmp_path)
    assert dest.read_bytes()[:4] == b"\x7fELF"
    assert script.read_text().startswith(f"#!{sys.executable} -IS\n")
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    env = {"PATH": "/usr/bin:/bin", key.ENV_DIR: str(tpl), "X": "a=b"}
    lst, _t, seen = _fake_template(tpl, b"exit 7")
    with lst:
        res = subprocess.run([str(dest), "-namespace", "ns", "-id", "c1", "delete"], env=env, cwd=tmp_path,
                             capture_output=True)
    assert res.returncode == 7, res.stderr
    got_key, ns, cwd, umask, argv, got_env = client.decode_request(seen[0])
    assert (got_key, ns, cwd, umask) == (key.install_key(), key.namespaces(), str(tmp_path), _umask())
    assert argv == [str(dest), "-namespace", "ns", "-id", "c1", "delete"]
    assert got_env == env


@needs_cc
@pytest.mark.parametrize("case", ["refused", "off", "exporter", "not-forwarded"])
def test_native_front_hands_everything_else_to_the_python_launcher(tmp_path: Path, case: str) -> None:
    """A refusal, the template switched off, an OTLP exporter configured, or an action that is not
    forwarded: the Python launcher runs (and decides) with the same arguments."""
    from runwasm.shim.template import key

    dest, _script = _generate_native(tmp_path)
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    env = {"PATH": "/usr/bin:/bin", key.ENV_DIR: str(tpl)}
    if case == "off":
        env[key.ENV_SWITCH] = "off"
    if case == "exporter":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
    argv = [str(dest), "-v"] if case == "not-forwarded" else [str(dest), "-namespace", "ns", "-id", "c1", "delete"]
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    lst, _t, seen = _fake_template(tpl, b"refused installation key or fds do not match")
    with lst:
        res = subprocess.run(argv, env=env, cwd=bundle, capture_output=True)
    assert res.returncode == 0, res.stderr
    if case == "not-forwarded":
        assert b"Runtime:  io.containerd.runwasm.v1" in res.stdout
        assert seen == []
        return
    # delete ran here (in the Python launcher): a DeleteResponse with exit_status 137 (field 2)
    assert b"\x10\x89\x01" in res.stdout
    assert len(seen) == (2 if case == "refused" else 0)  # the native front asked, then the Python launcher


@needs_cc
def test_native_front_spawns_the_template_when_start_finds_no_socket(tmp_path: Path) -> None:
    """A `start` that finds no template socket: the front spawns the Python launcher's template
    action (its own session, /dev/null stdio, only PATH/LANG/LC_ALL/TZ/RUNWASM_*), then execs the
    Python launcher with the template's pid in RUNWASM_TEMPLATE_LAUNCHED. A `delete` spawns none."""
    from runwasm.shim.template import client, key

    dest, script = _generate_native(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    # stand-in for the Python launcher: records how it was run
    script.write_text(f"""#!{sys.executable}
import os, sys, json
name = "template" if sys.argv[1:] == ["{key.TEMPLATE_ACTION}"] else "action-" + sys.argv[-1]
fds = {{fd: os.path.realpath(f"/proc/self/fd/{{fd}}") for fd in (0, 1, 2)}}
json.dump({{"argv": sys.argv, "env": dict(os.environ), "pid": os.getpid(), "sid": os.getsid(0), "fds": fds}},
          open(os.path.join("{out}", name + ".json"), "w"))
""")
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    env = {"PATH": "/usr/bin:/bin", key.ENV_DIR: str(tpl), "TTRPC_ADDRESS": "/run/x.sock", "LANG": "C.UTF-8"}
    for action in ("delete", "start"):
        res = subprocess.run([str(dest), "-namespace", "ns", "-id", "c1", action], env=env, cwd=tmp_path,
                             capture_output=True)
        assert res.returncode == 0, res.stderr
    import json
    import time

    deadline = time.monotonic() + 10
    while not (out / "template.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    spawned = json.loads((out / "template.json").read_text())
    start = json.loads((out / "action-start.json").read_text())
    delete = json.loads((out / "action-delete.json").read_text())
    assert spawned["argv"] == [str(script), key.TEMPLATE_ACTION]
    assert spawned["env"] == {"PATH": "/usr/bin:/bin", key.ENV_DIR: str(tpl), "LANG": "C.UTF-8"}
    assert spawned["sid"] == spawned["pid"]
    assert set(spawned["fds"].values()) == {"/dev/null"}
    assert start["env"][client.ENV_LAUNCHED] == str(spawned["pid"])
    assert start["env"]["TTRPC_ADDRESS"] == "/run/x.sock"
    assert client.ENV_LAUNCHED not in delete["env"]


def test_without_a_compiler_the_python_launcher_is_the_binary(tmp_path: Path) -> None:
    dest, script = _generate_native(tmp_path, CC=str(tmp_path / "no-such-cc"))
    assert dest.read_text() == script.read_text()
    out = subprocess.run([str(dest), "-v"], capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    assert "Runtime:  io.containerd.runwasm.v1" in out.stdout


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
