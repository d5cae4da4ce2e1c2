"""``runwasm``'s own errors: one line naming what was expected, what arrived and where; a
non-zero exit; no traceback (issue 9, items 12-14)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runwasm.shim.common.errors import NotFoundError
from runwasm.shim.common.version import VERSION
from runwasm.shim.harness.cli import classify_target, main
from runwasm.shim.harness.driver import Harness
from tests.conftest import built_fixture

RUNWASM = str(Path(sys.executable).parent / "runwasm")


def _runwasm(*args: str, root: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if root is not None:
        env["RUNWASM_ROOT"] = str(root)
    return subprocess.run([RUNWASM, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    assert stderr.count("\n") == 1, stderr
    assert stderr.endswith("\n"), stderr
    return stderr.rstrip("\n")


@pytest.mark.parametrize("target", ["./hello.wsam", "hello.wat", "x.wasm", "/nonexistent/m.wasm",
                                    "sub/dir/app.wasm", "../up.wat", "~/nope.wasm"])
def test_a_missing_path_like_target_is_no_such_file(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", target]) == 125
    assert _one_line(capsys.readouterr().err) == f"runwasm: no such file: {target}"


@pytest.mark.parametrize(("target", "kind"), [("hello", "image"), ("demo/hello:1", "image"),
                                              ("docker.io/demo/busybox:latest", "image"),
                                              ("localhost:5000/a/b", "image")])
def test_a_reference_is_an_image(target: str, kind: str) -> None:
    assert classify_target(target)[0] == kind


def test_existing_files_and_dirs_are_modules_and_bundles(tmp_path: Path) -> None:
    (tmp_path / "m.wsam").write_bytes(b"\0asm")
    assert classify_target(str(tmp_path / "m.wsam")) == ("module", tmp_path / "m.wsam")
    assert classify_target(str(tmp_path)) == ("bundle", tmp_path)
    with pytest.raises(NotFoundError, match="no such file"):
        classify_target(str(tmp_path / "m.wasm"))


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"runwasm {VERSION} (revision dev)\n"


@pytest.mark.parametrize(("extra", "target", "expected"), [
    (["--snapshotter-root", "/x"], "demo/app:1", "runwasm: --snapshotter-root applies with --containerd"),
    (["--containerd", "/run/x.sock"], "FILE", "runwasm: --containerd takes an image from containerd, and"),
])
def test_containerd_options_are_refused_where_they_cannot_apply(extra: list[str], target: str, expected: str,
                                                                 tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    if target == "FILE":
        target = str(built_fixture("wasm", "hello.wasm"))
    assert main(["run", *extra, target]) == 2
    assert capsys.readouterr().err.startswith(expected)


@pytest.mark.privileged
def test_missing_image_names_the_store_and_how_to_fill_it(tmp_path: Path) -> None:
    res = _runwasm("run", "--root", str(tmp_path), "demo/nope:1")
    line = _one_line(res.stderr)
    assert res.returncode == 125
    assert line.startswith("runwasm: failed to get image 'demo/nope:1' (normalised: 'docker.io/demo/nope:1'):"
                           f" not found in the image store {str(tmp_path)!r}")
    for hint in ("runwasm image import", "runwasm image ls", "--root"):
        assert hint in line


@pytest.mark.privileged
@pytest.mark.parametrize(("config", "expected"), [
    ("[1, 2]", "$: expected an object, got [1, 2]"),
    ('{"process": [], "root": {"path": "rootfs"}}', "process: expected an object, got []"),
    ('{"process": {"args": "sh"}}', "process.args: expected"),
    ("{not json", "not JSON"),
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
])
def test_bad_bundle_is_one_line_without_traceback(tmp_path: Path, config: str, expected: str) -> None:
    """Before: an array crashed with AttributeError, and every early error was followed by the
    events server's ``OSError(9, 'Bad file descriptor')`` traceback."""
    (tmp_path / "config.json").write_text(config)
    res = _runwasm("run", str(tmp_path))
    line = _one_line(res.stderr)
    assert res.returncode == 125
    assert line.startswith(f"runwasm: invalid bundle {str(tmp_path)!r}: invalid runtime spec "
                           f"{str(tmp_path / 'config.json')!r}"), line
    assert expected in line


@pytest.mark.privileged
def test_harness_left_before_its_events_server_ran_leaves_no_task_error(caplog: pytest.LogCaptureFixture) -> None:
    """The harness's Events server task must end cleanly even when the harness is left before
    that task ever ran (it used to die on the closed listener: "Task exception was never
    retrieved ... OSError(9, 'Bad file descriptor')")."""
    async def leave_at_once() -> None:
        async with Harness():
            pass

    with caplog.at_level(logging.ERROR):
        asyncio.run(leave_at_once())
        gc.collect()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.privileged
def test_module_runs_and_bundle_args_still_apply(tmp_path: Path) -> None:
    """The early shape check of an adopted bundle does not refuse a good one."""
    res = _runwasm("run", str(built_fixture("wasm", "hello.wasm")))
    assert (res.returncode, res.stdout) == (0, "hello from wasm\n"), res.stderr
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "exit7.wasm").write_bytes(built_fixture("wasm", "exit7.wasm").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": None, "process": {"args": ["/exit7.wasm"], "cwd": "/", "env": None}}))
    res = _runwasm("run", str(tmp_path))
    assert res.returncode == 7, res.stderr


def test_a_bad_container_id_is_refused_before_anything_is_created(capsys: pytest.CaptureFixture[str]) -> None:
    """Before: ``--id bad/id`` ended in a bare "[Errno 2] No such file or directory"."""
    assert main(["run", "--id", "bad/id", str(built_fixture("wasm", "hello.wasm"))]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("runwasm: invalid container id (--id) 'bad/id'"), line
