"""The launcher side of the template protocol, against sockets the test controls."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from runwasm.shim.template import client, key


def test_request_round_trips() -> None:
    env = {"A": "1", "B": "x=y", "EMPTY": ""}
    data = client.encode_request("k1", "net=1:2", "/some/bundle", 0o022, ["/bin/shim", "-id", "c", "delete"], env)
    assert client.decode_request(data) == ("k1", "net=1:2", "/some/bundle", 0o022,
                                           ["/bin/shim", "-id", "c", "delete"], env)


@pytest.mark.parametrize("data", [b"", b"XXXX\0k", b"RWT1\0k\0n\0/\0" + b"22", b"RWT1\0k\0n\0/\x0022\x005\0a",
                                  b"RWT1\0k\0/\x0022\x001\0a"])
def test_bad_requests_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        client.decode_request(data)


def _fake_template(directory: Path, reply: bytes) -> tuple[socket.socket, threading.Thread, list[bytes]]:
    """A socket at the template's path that answers every request with ``reply``."""
    path = directory / f"template-{key.install_key()}.sock"
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    lst.bind(str(path))
    lst.listen(4)
    seen: list[bytes] = []

    def serve() -> None:
        try:
            conn, _ = lst.accept()
        except OSError:  # closed by a test that expects no connection
            return
        with conn:
            msg, anc, _f, _a = conn.recvmsg(client.MAX_REQUEST, socket.CMSG_SPACE(16))
            seen.append(msg)
            for _level, _kind, fds in anc:
                for i in range(0, len(fds), 4):
                    os.close(int.from_bytes(fds[i:i + 4], "little"))
            conn.send(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lst, t, seen


def test_forward_returns_the_template_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(key.ENV_DIR, str(tmp_path))
    lst, t, seen = _fake_template(tmp_path, b"exit 3")
    with lst:
        assert client.forward(["/bin/shim", "-id", "c", "delete"]) == 3
        t.join(5)
    got = client.decode_request(seen[0])
    assert got[0] == key.install_key()
    assert got[1] == key.namespaces()  # the template refuses callers in other namespaces than its own
    assert got[2] == os.getcwd()
    assert got[4][-1] == "delete"
    assert got[5][key.ENV_DIR] == str(tmp_path)


@pytest.mark.parametrize("reply", [b"refused installation key or fds do not match", b""])
def test_refusal_or_a_dead_child_means_run_it_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    reply: bytes) -> None:
    monkeypatch.setenv(key.ENV_DIR, str(tmp_path))
    lst, t, _ = _fake_template(tmp_path, reply)
    with lst:
        assert client.forward(["/bin/shim", "-id", "c", "start"]) is None
        t.join(5)


def test_no_template_stale_socket_or_switched_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(key.ENV_DIR, str(tmp_path))
    assert client.forward(["/bin/shim", "-id", "c", "start"]) is None  # no socket
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(str(tmp_path / f"template-{key.install_key()}.sock"))
    stale.close()  # the file stays, nobody listens: a SIGKILLed template
    assert client.forward(["/bin/shim", "-id", "c", "start"]) is None
    monkeypatch.setenv(key.ENV_SWITCH, "off")
    assert client.forward(["/bin/shim", "-id", "c", "start"]) is None


def test_start_waits_for_the_template_the_native_front_spawned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The native front found no socket and spawned a template (its pid in ENV_LAUNCHED, a child of
    this process): ``run`` waits for that one (here it exits as "locked" while another comes up,
    which ``run`` tolerates) instead of spawning its own, and removes the variable."""
    import subprocess
    import sys

    monkeypatch.setenv(key.ENV_DIR, str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", f"import sys; sys.exit({client.LOCKED_EXIT})"])
    monkeypatch.setenv(client.ENV_LAUNCHED, str(child.pid))

    def no_spawn(_program: str) -> int | None:
        raise AssertionError("spawned a second template")

    monkeypatch.setattr(client, "launch_pid", no_spawn)
    monkeypatch.setattr(client, "launch", no_spawn)
    late: list[tuple[socket.socket, threading.Thread, list[bytes]]] = []
    timer = threading.Timer(0.3, lambda: late.append(_fake_template(tmp_path, b"exit 4")))
    timer.start()
    try:
        assert client.run(["/bin/shim", "-id", "c", "start"]) == 4
    finally:
        timer.join()
        for lst, t, _seen in late:
            t.join(5)
            lst.close()
    assert client.ENV_LAUNCHED not in os.environ
    assert child.returncode is None  # reaped by run() itself
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)


@pytest.mark.parametrize("value", ["", "junk", "1"])
def test_a_launched_pid_that_is_not_our_child_is_ignored(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(client.ENV_LAUNCHED, value)
    assert client._launched_by_front() is None
    assert client.ENV_LAUNCHED not in os.environ


def test_only_start_and_delete_are_forwarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(key.ENV_DIR, str(tmp_path))
    lst, _t, seen = _fake_template(tmp_path, b"exit 0")
    with lst:
        assert client.forward(["/bin/shim", "-v"]) is None
        assert client.forward(["/bin/shim", "-info"]) is None
        assert client.forward(["/bin/shim", "-id", "c", key.TEMPLATE_ACTION]) is None
    assert seen == []


def test_a_shim_that_exports_telemetry_is_not_forwarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """With an OTLP exporter configured, start/delete take the exec'd path (see client._exports_telemetry)."""
    from runwasm.shim.template import client

    for var in [v for v in os.environ if v.startswith("OTEL_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert client._exports_telemetry(os.environ)
    assert client.forward(["containerd-shim-runwasm-v1", "-id", "x", "start"]) is None
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not client._exports_telemetry(os.environ)


def test_without_an_exporter_the_launcher_imports_no_telemetry_code() -> None:
    """The launcher decides "no exporter" from the endpoint variables alone: importing otel_env
    (dataclasses, json, re) cost ~40 ms of every forwarded start and delete."""
    import subprocess
    import sys

    code = ("import os, sys; from runwasm.shim.template import client; "
            "assert not client._exports_telemetry({'OTEL_SERVICE_NAME': 'x', 'OTEL_EXPORTER_OTLP_PROTOCOL': 'grpc'}); "
            "print(sorted(m for m in ('runwasm.shim.common.otel_env', 'dataclasses', 'json') if m in sys.modules))")
    from runwasm.shim.template.key import package_path

    # the launcher's own set-up (scripts/gen_launcher.py): no `site`, runwasm as a package object
    setup = f"import sys; _p = type(sys)('runwasm'); _p.__path__ = {package_path()!r}; sys.modules['runwasm'] = _p; "
    out = subprocess.run([sys.executable, "-IS", "-c", setup + code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_endpoint_shortcut_agrees_with_otel_env() -> None:
    """Only the endpoint variables can turn an exporter on, so the shortcut never hides one."""
    from runwasm.shim.common import otel_env
    from runwasm.shim.template import client

    others = {"OTEL_SERVICE_NAME": "s", "OTEL_EXPORTER_OTLP_PROTOCOL": "bogus", "OTEL_TRACES_EXPORTER": "otlp",
              "OTEL_METRICS_EXPORTER": "otlp", "OTEL_RESOURCE_ATTRIBUTES": "a=b", "TRACEPARENT": "00-" + "1" * 32 + "-"
              + "2" * 16 + "-01"}
    assert not otel_env.parse(others).any
    assert not client._exports_telemetry(others)
    for var in client._OTEL_ENDPOINTS:
        env = {var: "http://127.0.0.1:4318"}
        assert otel_env.parse(env).any
        assert client._exports_telemetry(env)
