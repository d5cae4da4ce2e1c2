"""The short-lived actions of the real ``containerd-shim-runwasm-v1`` binary, run as containerd runs them."""

from __future__ import annotations

import socket
import stat
import subprocess
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from runwasm.shim.api.runtime.task.v3 import shim_pb2
from runwasm.shim.api.types import introspection_pb2
from runwasm.shim.api.types.runtimeoptions.v1 import api_pb2 as runtimeoptions_pb2
from runwasm.shim.common.version import VERSION
from runwasm.shim.harness.driver import shim_command


def _run(args: list[str], *, stdin: bytes = b"", cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*shim_command(), *args], input=stdin, cwd=cwd, capture_output=True, timeout=30,
                          check=False)


def test_binary_is_the_installed_script() -> None:
    assert Path(shim_command()[0]).name == "containerd-shim-runwasm-v1"


@pytest.mark.parametrize("flag", ["-v", "-version", "--version"])
def test_version(flag: str) -> None:
    p = _run([flag])
    assert p.returncode == 0
    assert VERSION in p.stdout.decode()
    assert "io.containerd.runwasm.v1" in p.stdout.decode()
    assert p.stderr == b""


def test_info_without_options() -> None:
    p = _run(["-info"])
    assert p.returncode == 0, p.stderr
    assert p.stderr == b""
    info = introspection_pb2.RuntimeInfo.FromString(p.stdout)
    assert info.name == "io.containerd.runwasm.v1"
    assert info.version.version == VERSION
    assert not info.HasField("options")


def test_info_echoes_options() -> None:
    opts = any_pb2.Any(type_url="runtimeoptions.v1.Options",
                       value=runtimeoptions_pb2.Options(config_path="/etc/runwasm.toml").SerializeToString())
    p = _run(["-info"], stdin=opts.SerializeToString())
    assert p.returncode == 0, p.stderr
    info = introspection_pb2.RuntimeInfo.FromString(p.stdout)
    assert info.name == "io.containerd.runwasm.v1"
    assert info.options == opts


def _delete_argv(bundle: Path) -> list[str]:
    return ["-namespace", "default", "-address", "/run/containerd/containerd.sock", "-publish-binary",
            "/usr/bin/containerd", "-id", "c1", "-bundle", str(bundle), "-debug", "delete"]


def test_delete_empty_bundle_is_idempotent(tmp_path: Path) -> None:
    for _ in range(2):
        p = _run(_delete_argv(tmp_path), cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert p.stderr == b""
        resp = shim_pb2.DeleteResponse.FromString(p.stdout)
        assert resp.exit_status == 137
        assert resp.pid == 0
        assert resp.HasField("exited_at")
        assert resp.exited_at.seconds > 0
    assert list(tmp_path.iterdir()) == []


def test_delete_uses_cwd_without_bundle_flag(tmp_path: Path) -> None:
    p = _run(["-namespace", "default", "-id", "c1", "delete"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert shim_pb2.DeleteResponse.FromString(p.stdout).exit_status == 137


def test_delete_reports_recorded_exit(tmp_path: Path) -> None:
    (tmp_path / "runwasm.json").write_text(
        '{"id": "c1", "kind": "wasm", "pid": 0, "pid_start_time": 0, "exit_status": 7, "mounts": [], "cgroup": ""}')
    p = _run(_delete_argv(tmp_path), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert shim_pb2.DeleteResponse.FromString(p.stdout).exit_status == 7


def test_start_without_id_fails_clearly(tmp_path: Path) -> None:
    p = _run(["-namespace", "default", "-address", "/run/containerd/containerd.sock", "start"], cwd=tmp_path)
    assert p.returncode == 1
    assert p.stdout == b""
    err = p.stderr.decode()
    assert err.count("\n") == 1
    assert err.endswith("\n")
    assert "-id" in err
    assert not (tmp_path / "address").exists()


def test_unknown_action(tmp_path: Path) -> None:
    p = _run(["-id", "c1", "frobnicate"], cwd=tmp_path)
    assert p.returncode == 2
    assert "'frobnicate'" in p.stderr.decode()


def test_delete_knows_the_executors_record_files() -> None:
    from runwasm.linux import executor, task_cgroup
    from runwasm.shim.entry import delete

    assert delete.LINUX_RECORD == executor.STATE_FILE
    assert delete.WASM_RECORD == task_cgroup.WASM_STATE_FILE
    from runwasm.shim.server import sandbox

    assert delete.SANDBOX_CONTAINERS == sandbox.CONTAINERS_DIR
    from runwasm.shim.common import statefile

    assert sandbox.RECORD_FILES == (statefile.FILENAME, executor.STATE_FILE, task_cgroup.WASM_STATE_FILE)


def _address(bundle: Path, path: Path) -> None:
    (bundle / "address").write_text(f"unix://{path}")


def test_delete_removes_a_stale_group_socket(tmp_path: Path) -> None:
    path = tmp_path / "group.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # what a SIGKILLed server leaves: the file, with nothing bound to it
    _address(tmp_path, path)
    p = _run(_delete_argv(tmp_path), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert not path.exists()


@pytest.mark.parametrize("listening", [True, False], ids=["listening", "bound-by-a-start"])
def test_delete_keeps_a_socket_that_is_in_use(tmp_path: Path, listening: bool) -> None:
    path = tmp_path / "group.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))  # not listening: a `start` between its bind and its listen
        if listening:
            sock.listen()
        _address(tmp_path, path)
        p = _run(_delete_argv(tmp_path), cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert stat.S_ISSOCK(path.lstat().st_mode)
    finally:
        sock.close()


def test_delete_leaves_what_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("x")
    _address(tmp_path, path)
    assert _run(_delete_argv(tmp_path), cwd=tmp_path).returncode == 0
    assert path.read_text() == "x"


@pytest.mark.skipif(not Path("/sys/fs/cgroup").is_dir(), reason="needs cgroups")
def test_delete_of_a_sandbox_bundle_removes_the_holder_cgroup(tmp_path: Path) -> None:
    """A Sandbox API bundle has no config.json nor runwasm.json: the namespace holder's cgroup
    record and copies of the pod's containers' records. After a SIGKILLed server ``delete``
    cleans both (containerd runs no ``delete`` for a sandboxed container)."""
    import os
    import time

    from runwasm.linux.task_cgroup import CgroupSandbox
    from runwasm.oci.runtime_spec import Linux

    top = f"rwsbx-delete-{os.getpid()}"
    bundle = tmp_path / "sbx"
    bundle.mkdir()
    # the holder's cgroup, and the copy of a Wasm container's records the server keeps
    copy = bundle / "containers" / "c1"
    copy.mkdir(parents=True)
    (copy / "runwasm.json").write_text(
        '{"id": "c1", "kind": "wasm", "pid": 0, "pid_start_time": 0, "exit_status": null, "mounts": [], "cgroup": ""}')
    groups = [CgroupSandbox.create(bundle, "sbx", "", Linux(cgroups_path=f"/{top}/sbx")),
              CgroupSandbox.create(copy, "c1", "", Linux(cgroups_path=f"/{top}/c1"))]
    orphans = [subprocess.Popen(["sleep", "300"]) for _ in groups]
    try:
        for cgs, orphan in zip(groups, orphans, strict=True):
            cgs.cg.attach(orphan.pid)
        p = _run(_delete_argv(bundle), cwd=bundle)
        assert p.returncode == 0, p.stderr
        assert [o.wait(timeout=30) for o in orphans] == [-9, -9]
        assert not (bundle / "wasm-state.json").exists()
        assert not (copy / "wasm-state.json").exists()
        assert [d for d in Path("/sys/fs/cgroup").glob(f"*/{top}/*")] == []
    finally:
        for orphan in orphans:
            if orphan.poll() is None:
                orphan.kill()
                orphan.wait()
        for cgs in groups:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    cgs.destroy()
                    break
                except Exception:  # noqa: BLE001 - best-effort clean-up of a failed run
                    time.sleep(0.1)
        for d in Path("/sys/fs/cgroup").glob(f"*/{top}"):
            d.rmdir()


# --- delete of a container its server released (shim/common/statefile.py RELEASED_FILE) ----------

def _native() -> bool:
    return Path(shim_command()[0]).read_bytes()[:4] == b"\x7fELF"


needs_native = pytest.mark.skipif(not _native(), reason="the shim binary is the Python launcher (no C compiler at "
                                                        "install): no native delete answer")


def _released_bundle(bundle: Path, address: str | None) -> None:
    from runwasm.shim.common.statefile import BundleState

    # runwasm.json says pid 0: an answer with pid 4242 came from the released record
    BundleState(id="c1", kind="wasm", pid=0, exit_status=7).save(bundle)
    BundleState(id="c1", kind="wasm", pid=4242, exit_status=7).mark_released(bundle)
    if address is not None:
        (bundle / "address").write_text(address)


@needs_native
@pytest.mark.parametrize("with_flag", [True, False])
def test_delete_of_a_released_container_is_answered_from_its_record(tmp_path: Path, with_flag: bool) -> None:
    _released_bundle(tmp_path, f"unix://{tmp_path}/gone.sock")  # the server exited and removed its socket
    argv = _delete_argv(tmp_path) if with_flag else ["-namespace", "default", "-id", "c1", "delete"]
    p = _run(argv, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr == b""
    resp = shim_pb2.DeleteResponse.FromString(p.stdout)
    assert (resp.pid, resp.exit_status) == (4242, 7)
    assert resp.exited_at.seconds > 0


@needs_native
def test_released_delete_with_a_live_server_leaves_its_socket_alone(tmp_path: Path) -> None:
    """Bound (/proc/net/unix): the socket stays, and no connection reaches the server, which may be
    shutting down right then (a connection there failed asyncio's accept callback and lost the
    server's exit lines: tests/integration/test_tracing.py)."""
    path = tmp_path / "s.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(1)
    with live:
        _released_bundle(tmp_path, f"unix://{path}")
        p = _run(_delete_argv(tmp_path), cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert shim_pb2.DeleteResponse.FromString(p.stdout).pid == 4242
        assert path.exists()
        live.setblocking(False)
        with pytest.raises(BlockingIOError):
            live.accept()


def test_released_delete_with_a_dead_servers_socket_runs_the_cleanup(tmp_path: Path) -> None:
    """A socket nobody accepts on may be a SIGKILLed server's: the Python action checks and removes it."""
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    _released_bundle(tmp_path, f"unix://{path}")
    p = _run(_delete_argv(tmp_path), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert shim_pb2.DeleteResponse.FromString(p.stdout).pid == 0  # from runwasm.json: the cleanup ran
    assert not path.exists()


def test_the_released_record_holds_what_the_cleanup_answers(tmp_path: Path) -> None:
    from runwasm.shim.common.statefile import BundleState

    for status in (7, None):
        state = BundleState(id="c1", kind="wasm", pid=0, exit_status=status)
        state.save(tmp_path)
        p = _run(_delete_argv(tmp_path), cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        head = state.response_fields()
        assert p.stdout[:len(head)] == head
        assert p.stdout[len(head)] == 3 << 3 | 2  # then only exited_at
