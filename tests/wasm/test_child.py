"""Run ``runwasm.wasm.child.main`` for real, playing the shim side of the control channel."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.wasm import harness


def payload(rootfs: Path, cache_dir: Path, *args: str, **kw: Any) -> dict[str, Any]:
    return {"rootfs": str(rootfs), "args": list(args), "cache_dir": str(cache_dir), **kw}


IN_PROCESS = {"sandbox": {"executor": "inprocess"}}
"""``WasmExecutor = "inprocess"``: wasmtime-py in the workload, even where wasmtime-min could run it."""
EXECUTORS = pytest.mark.parametrize("executor", ["auto", "inprocess"])
INVALID_STATUS = "exit with invalid exit status outside of [0..126)"
"""What wasmtime's WASI says (on the task's stderr, status 1) for ``proc_exit(n)``, n >= 126."""


def _executor(executor: str) -> dict[str, Any]:
    return IN_PROCESS if executor == "inprocess" else {}


def expect_error(p: dict[str, Any]) -> dict[str, Any]:
    child = harness.spawn(p)
    msg = child.handshake()
    rc, out, _err, _log = child.finish()
    assert msg["type"] == "error", msg
    assert rc == 1
    assert out == ""
    return msg


def test_hello_prints_and_exits_zero(rootfs: Path, cache_dir: Path) -> None:
    child = harness.spawn(payload(rootfs, cache_dir, "/hello.wasm"))
    msg = child.handshake()
    assert msg == {"type": "ready", "pid": child.proc.pid}
    child.start()
    rc, out, err, _log = child.finish()
    assert (rc, out, err) == (0, "hello from wasm\n", "")
    assert child.outcome["helper_stdout"] == ""  # nothing leaks to the workload's own stdout


def test_export_syntax_calls_named_export(rootfs: Path, cache_dir: Path) -> None:
    rc, out, _, _ = harness.run(payload(rootfs, cache_dir, "/hello.wasm#greet"))
    assert (rc, out) == (0, "greetings from wasm\n")


def test_wat_text_module_runs(rootfs: Path, cache_dir: Path) -> None:
    rc, out, _, _ = harness.run(payload(rootfs, cache_dir, "/hello.wat"))
    assert (rc, out) == (0, "hello from wasm\n")


def test_bare_name_is_searched_in_guest_path(rootfs: Path, cache_dir: Path) -> None:
    (rootfs / "bin").mkdir()
    os.rename(rootfs / "hello.wasm", rootfs / "bin" / "hello")
    rc, out, _, _ = harness.run(payload(rootfs, cache_dir, "hello", env=["PATH=/nowhere:/bin"]))
    assert (rc, out) == (0, "hello from wasm\n")


@EXECUTORS
@pytest.mark.parametrize("code", [0, 7, 125, 255])
def test_fixed_exit_codes(rootfs: Path, cache_dir: Path, code: int, executor: str) -> None:
    rc, out, err, log = harness.run(payload(rootfs, cache_dir, f"/exit{code}.wasm", **_executor(executor)))
    if executor == "auto" and code >= 126:  # wasmtime-min: WASI's range only, and it says so
        assert (rc, INVALID_STATUS in err) == (1, True), (err, log)
    else:
        assert rc == code, log


@pytest.mark.parametrize(("arg", "code"), [("1", 1), ("126", 126), ("127", 127), ("200", 200), ("256", 0), ("257", 1)])
def test_proc_exit_code_is_exact(rootfs: Path, cache_dir: Path, arg: str, code: int) -> None:
    rc, _, _, log = harness.run(payload(rootfs, cache_dir, "/exit_arg.wasm", arg, **IN_PROCESS))
    assert rc == code, log


@pytest.mark.parametrize(("arg", "code"), [("0", 0), ("1", 1), ("125", 125), ("126", 1), ("255", 1), ("256", 1)])
def test_proc_exit_code_under_wasmtime_min(rootfs: Path, cache_dir: Path, arg: str, code: int) -> None:
    """The default route execs wasmtime-min: 0..125 exact, the rest 1 with wasmtime's message."""
    rc, _, err, log = harness.run(payload(rootfs, cache_dir, "/exit_arg.wasm", arg))
    assert rc == code, log
    assert (INVALID_STATUS in err) == (int(arg) >= 126)


TRAP_REPORT = (
    "Error: failed to run main module `/trap.wasm`\n\nCaused by:\n    0: failed to invoke command default\n"
    "    1: error while executing at wasm backtrace:\n    0:     0x5f - <unknown>!boom\n"
    "    1:     0x7c - <unknown>!<wasm function 2>\n    2: wasm trap: wasm `unreachable` instruction executed\n"
)
"""What ``wasmtime run trap.wasm`` (CLI 49.0.3) writes to stderr, but for the Rust backtrace."""


def _as_min_reports(err: str) -> str:
    """wasmtime-min names the module by the fd it was given (``/proc/self/fd/N``)."""
    return re.sub(r"`/proc/self/fd/\d+`", "`/trap.wasm`", err)


def test_trap_exits_134_is_logged_and_reported_on_stderr(rootfs: Path, cache_dir: Path) -> None:
    rc, out, err, log = harness.run(payload(rootfs, cache_dir, "/trap.wasm", **IN_PROCESS))
    assert rc == 134
    assert out == "about to trap\n"
    assert err == TRAP_REPORT
    assert "wasm trap" in log
    assert "UNREACHABLE" in log
    assert "/trap.wasm" in log


def test_trap_under_wasmtime_min_exits_134_with_the_cli_report(rootfs: Path, cache_dir: Path) -> None:
    rc, out, err, log = harness.run(payload(rootfs, cache_dir, "/trap.wasm"))
    assert (rc, out) == (134, "about to trap\n"), log
    assert err.startswith("Error: failed to run main module `/proc/self/fd/")
    assert _as_min_reports(err) == TRAP_REPORT + "\n"  # the real CLI ends it with an empty line


def test_trap_without_log_fd_goes_to_original_stderr(rootfs: Path, cache_dir: Path) -> None:
    child = harness.spawn(payload(rootfs, cache_dir, "/trap.wasm", **IN_PROCESS), log=False)
    assert child.handshake()["type"] == "ready"
    child.start()
    rc, _out, err, _ = child.finish()
    assert rc == 134
    assert err == TRAP_REPORT
    assert "UNREACHABLE" in child.outcome["helper_stderr"]


def test_args_and_env_reach_the_guest(rootfs: Path, cache_dir: Path) -> None:
    p = payload(rootfs, cache_dir, "/argsenv.wasm", "a b", "", "c=d", env=["FOO=bar", "EMPTY=", "X=1=2"])
    rc, out, _, _ = harness.run(p)
    assert rc == 0
    assert out == (
        "arg: /argsenv.wasm\narg: a b\narg: \narg: c=d\n"
        "env: FOO=bar\nenv: EMPTY=\nenv: X=1=2\n"
    )


def test_cwd_sets_pwd_unless_given(rootfs: Path, cache_dir: Path) -> None:
    (rootfs / "work").mkdir()
    rc, out, _, _ = harness.run(payload(rootfs, cache_dir, "/argsenv.wasm", env=["A=1"], cwd="/work"))
    assert (rc, out) == (0, "arg: /argsenv.wasm\nenv: A=1\nenv: PWD=/work\n")
    rc, out, _, _ = harness.run(payload(rootfs, cache_dir, "/argsenv.wasm", env=["PWD=/x"], cwd="/work"))
    assert (rc, out) == (0, "arg: /argsenv.wasm\nenv: PWD=/x\n")


def test_guest_reads_file_from_rootfs(rootfs: Path, cache_dir: Path) -> None:
    (rootfs / "data").mkdir()
    (rootfs / "data" / "msg.txt").write_text("from the rootfs\n")
    rc, out, _, _ = harness.run(payload(rootfs, cache_dir, "/readfile.wasm", "/data/msg.txt"))
    assert (rc, out) == (0, "from the rootfs\n")


@EXECUTORS
def test_guest_cannot_read_outside_rootfs(rootfs: Path, cache_dir: Path, executor: str) -> None:
    (rootfs.parent / "secret.txt").write_text("secret\n")
    rc, out, err, _ = harness.run(payload(rootfs, cache_dir, "/readfile.wasm", "../secret.txt", **_executor(executor)))
    if executor == "inprocess":
        assert rc in (100 + 63, 100 + 76)  # EPERM (what wasmtime 50 returns) or ENOTCAPABLE
    else:  # the same errno, but 100 + errno is >= 126: wasmtime-min exits 1
        assert (rc, INVALID_STATUS in err) == (1, True)
    assert out == ""


def test_extra_preopen_is_visible(rootfs: Path, cache_dir: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "x.txt").write_text("bind mount\n")
    p = payload(rootfs, cache_dir, "/readfile.wasm", "x.txt", "4", preopens=[[str(shared), "/mnt"]])
    rc, out, _, _ = harness.run(p)
    assert (rc, out) == (0, "bind mount\n")


@pytest.mark.parametrize("read_only", [False, True])
def test_preopen_read_only_flag(rootfs: Path, cache_dir: Path, tmp_path: Path, read_only: bool) -> None:
    """A bind mount with ``ro``/``rro`` is a read-only (sandbox) preopen: the guest cannot create files."""
    shared = tmp_path / "shared"
    shared.mkdir()
    where = ({"sandbox": {"preopens": [[str(shared), "/mnt", True]]}} if read_only
             else {"preopens": [[str(shared), "/mnt"]]})
    rc, _, _, _ = harness.run(payload(rootfs, cache_dir, "/writefile.wasm", "out.txt", "4", **where))
    if read_only:
        assert rc in (100 + 63, 100 + 76, 100 + 69), rc  # EPERM, ENOTCAPABLE or EROFS
        assert not (shared / "out.txt").exists()
    else:
        assert rc == 0
        assert (shared / "out.txt").read_text() == "ok\n"


def test_rootfs_read_only(rootfs: Path, cache_dir: Path) -> None:
    rc, _, _, _ = harness.run(payload(rootfs, cache_dir, "/writefile.wasm", "/out.txt", rootfs_readonly=True))
    assert rc in (100 + 63, 100 + 76, 100 + 69), rc
    assert not (rootfs / "out.txt").exists()


def test_stdin_is_copied_through(rootfs: Path, cache_dir: Path) -> None:
    child = harness.spawn(payload(rootfs, cache_dir, "/cat.wasm"), stdin=True)
    assert child.handshake()["type"] == "ready"
    child.start()
    child.write_stdin(b"line1\nline2\n")
    rc, out, _, _ = child.finish()
    assert (rc, out) == (0, "line1\nline2\n")


def test_nonblocking_stdout_is_made_blocking(rootfs: Path, cache_dir: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, far more than a pipe buffer
    child = harness.spawn(
        payload(rootfs, cache_dir, "/cat.wasm"), stdin=True, stdout_nonblock=True, stdout_delay=0.5
    )
    assert child.handshake()["type"] == "ready"
    child.start()
    child.write_stdin(data)
    rc, _, _, log = child.finish()
    assert rc == 0, log
    assert b"".join(child.stdout.chunks) == data


@pytest.mark.parametrize(("module", "banner"), [("/spin.wasm", b"spinning\n"), ("/sleep.wasm", b"sleeping\n")])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_kill_stops_spinning_and_sleeping_guests(rootfs: Path, cache_dir: Path, module: str, banner: bytes, sig: int) -> None:
    child = harness.spawn(payload(rootfs, cache_dir, module))
    assert child.handshake()["type"] == "ready"
    child.start()
    child.wait_output(banner)
    child.kill(sig)
    rc, _, _, _ = child.finish(timeout=10)
    assert rc == -sig  # the shim reports 128 + sig (137 for SIGKILL)


@EXECUTORS
def test_running_task_is_wasmtime_min_unless_in_process(rootfs: Path, cache_dir: Path, executor: str) -> None:
    """After start a plain module's workload is the wasmtime-min binary (no Python left), with the
    precompiled artifact as an fd of the node's cache file; in process it stays Python, and the
    log says why."""
    child = harness.spawn(payload(rootfs, cache_dir, "/sleep.wasm", **_executor(executor)))
    assert child.handshake()["type"] == "ready"
    child.start()
    child.wait_output(b"sleeping\n")
    exe = os.readlink(f"/proc/{child.proc.pid}/exe")
    fds = [os.readlink(f"/proc/{child.proc.pid}/fd/{n}") for n in os.listdir(f"/proc/{child.proc.pid}/fd")]
    child.kill(signal.SIGKILL)
    _rc, _, _, log = child.finish(timeout=10)
    if executor == "auto":
        assert os.path.basename(exe).startswith("wasmtime-min"), exe
        assert any(f.startswith(str(cache_dir / "wasmtime-cli")) and f.endswith(".cwasm") for f in fds), fds
        assert "runs in process" not in log
    else:
        assert "python" in os.path.basename(exe), exe
        assert "runs in process (wasmtime-py): WasmExecutor = 'inprocess'" in log


def test_eof_before_start_exits_1_without_running(rootfs: Path, cache_dir: Path) -> None:
    child = harness.spawn(payload(rootfs, cache_dir, "/hello.wasm"))
    assert child.handshake()["type"] == "ready"
    child.abort()
    rc, out, _, _ = child.finish()
    assert (rc, out) == (1, "")


def test_start_section_does_not_run_before_start(rootfs: Path, cache_dir: Path) -> None:
    (rootfs / "start.wat").write_text(
        '(module (import "wasi_snapshot_preview1" "proc_exit" (func $e (param i32)))'
        ' (func $s (call $e (i32.const 9))) (start $s) (func (export "_start")))'
    )
    child = harness.spawn(payload(rootfs, cache_dir, "/start.wat"))
    assert child.handshake()["type"] == "ready"
    child.start()
    rc, _, _, _ = child.finish()
    assert rc == 9


@pytest.mark.parametrize(("name", "code"), [("component_run_ok", 0), ("component_run_err", 1), ("component_exit_err", 1)])
def test_component_command_exit_status(rootfs: Path, cache_dir: Path, name: str, code: int) -> None:
    rc, _, _, log = harness.run(payload(rootfs, cache_dir, f"/{name}.wasm"))
    assert rc == code, log
    assert "wasm trap" not in log


# Errors before ready ------------------------------------------------------------------------


def test_missing_module(rootfs: Path, cache_dir: Path) -> None:
    msg = expect_error(payload(rootfs, cache_dir, "/nope/app.wasm"))
    assert msg["kind"] == "ModuleNotFoundInRootfsError"
    assert "'/nope/app.wasm'" in msg["message"]
    assert "'/nope' does not exist" in msg["message"]


def test_non_wasm_file(rootfs: Path, cache_dir: Path) -> None:
    (rootfs / "app.wasm").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(64))
    msg = expect_error(payload(rootfs, cache_dir, "/app.wasm"))
    assert msg["kind"] == "InvalidModuleError"
    assert "expected a wasm binary" in msg["message"]
    assert "\\x7fELF" in msg["message"]
    assert str(rootfs / "app.wasm") in msg["message"]


def test_corrupt_module(rootfs: Path, cache_dir: Path) -> None:
    (rootfs / "app.wasm").write_bytes(b"\0asm\x01\x00\x00\x00\x01\xff\xff")
    msg = expect_error(payload(rootfs, cache_dir, "/app.wasm"))
    assert msg["kind"] == "InvalidModuleError"
    assert "failed to compile wasm module" in msg["message"]
    assert "/app.wasm" in msg["message"]


def test_directory_instead_of_module(rootfs: Path, cache_dir: Path) -> None:
    (rootfs / "dir.wasm").mkdir()
    msg = expect_error(payload(rootfs, cache_dir, "/dir.wasm"))
    assert msg["kind"] == "InvalidModuleError"
    assert "expected a regular file" in msg["message"]


def test_missing_export(rootfs: Path, cache_dir: Path) -> None:
    msg = expect_error(payload(rootfs, cache_dir, "/hello.wasm#nope"))
    assert msg["kind"] == "ExportNotFoundError"
    assert "'nope'" in msg["message"]
    assert "'greet'" in msg["message"]


def test_non_wasi_import_is_a_link_error(rootfs: Path, cache_dir: Path) -> None:
    (rootfs / "imp.wat").write_text('(module (import "env" "f" (func)) (func (export "_start")))')
    msg = expect_error(payload(rootfs, cache_dir, "/imp.wat"))
    assert msg["kind"] == "LinkError"
    assert "env::f" in msg["message"]


def test_symlink_escape_is_refused(rootfs: Path, cache_dir: Path) -> None:
    (rootfs / "evil.wasm").symlink_to("../../../../../../../etc/passwd")
    msg = expect_error(payload(rootfs, cache_dir, "/evil.wasm"))
    assert msg["kind"] == "PathEscapeError"


def test_bad_payload(rootfs: Path, cache_dir: Path) -> None:
    msg = expect_error({"rootfs": str(rootfs), "args": []})
    assert msg["kind"] == "InvalidPayloadError"


def test_missing_preopen_dir(rootfs: Path, cache_dir: Path, tmp_path: Path) -> None:
    p = payload(rootfs, cache_dir, "/hello.wasm", preopens=[[str(tmp_path / "absent"), "/mnt"]])
    msg = expect_error(p)
    assert msg["kind"] == "WasiSetupError"
    assert "absent" in msg["message"]


def test_module_file_runs_instead_of_args0(tmp_path: Path, cache_dir: Path) -> None:
    """An image's Wasm layer (``module_file``) runs whatever args[0] names; ``#export`` still applies."""
    from tests.conftest import built_fixture

    empty = tmp_path / "empty-rootfs"
    empty.mkdir()
    layer = built_fixture("wasm", "hello.wasm")
    rc, out, _, _ = harness.run(payload(empty, cache_dir, "wasi-demo.wasm#greet", module_file=str(layer),
                                        module_name="layer sha256:x"))
    assert (rc, out) == (0, "greetings from wasm\n")
    msg = expect_error(payload(empty, cache_dir, "/x.wasm", module_file=str(tmp_path / "gone.wasm")))
    assert "gone.wasm" in msg["message"]


def test_precompiled_file_is_deserialized_not_compiled(tmp_path: Path, cache_dir: Path) -> None:
    """``precompiled_file`` (the artifact the shim server took from containerd's content store) is
    loaded: the on-disk cache stays empty. One that does not deserialize is not fatal: the
    workload compiles ``module_file`` as without it (and the on-disk cache gets the entry)."""
    import wasmtime

    from runwasm.wasm.engine import make_engine
    from tests.conftest import built_fixture

    empty = tmp_path / "empty-rootfs"
    empty.mkdir()
    layer = built_fixture("wasm", "hello.wasm")
    good = tmp_path / "k.cwasm"
    good.write_bytes(bytes(wasmtime.Module(make_engine(), layer.read_bytes()).serialize()))
    rc, out, _, _ = harness.run(payload(empty, cache_dir, "m.wasm", module_file=str(layer), precompiled_file=str(good)))
    assert (rc, out) == (0, "hello from wasm\n")
    assert sorted(cache_dir.glob("wasmtime-[0-9]*/*.cwasm")) == []  # (wasmtime-cli/: wasmtime-min's artifact)
    bad = tmp_path / "bad.cwasm"
    bad.write_bytes(b"\x7fELF" + bytes(64))
    rc, out, _, _ = harness.run(payload(empty, cache_dir, "m.wasm", module_file=str(layer), precompiled_file=str(bad)))
    assert (rc, out) == (0, "hello from wasm\n")
    assert len(sorted(cache_dir.glob("wasmtime-[0-9]*/*.cwasm"))) == 1
