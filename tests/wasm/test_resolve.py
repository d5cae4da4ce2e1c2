"""Resolving ``args[0]`` inside a rootfs without escaping it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runwasm.wasm.errors import (
    InvalidEntrypointError,
    InvalidModuleError,
    ModuleNotFoundInRootfsError,
    PathEscapeError,
)
from runwasm.wasm.resolve import open_module, resolve_in_rootfs, resolve_module_path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "app" / "bin").mkdir(parents=True)
    (r / "app" / "bin" / "m.wasm").write_bytes(b"\0asm\x01\x00\x00\x00")
    (r / "usr" / "bin").mkdir(parents=True)
    return r


def test_absolute_path(root: Path) -> None:
    assert resolve_in_rootfs(root, "/app/bin/m.wasm") == root.resolve() / "app/bin/m.wasm"
    assert resolve_in_rootfs(root, "//app/./bin/../bin/m.wasm") == root.resolve() / "app/bin/m.wasm"


def test_absolute_symlink_is_rootfs_relative(root: Path) -> None:
    (root / "usr" / "bin" / "m").symlink_to("/app/bin/m.wasm")
    assert resolve_in_rootfs(root, "/usr/bin/m") == root.resolve() / "app/bin/m.wasm"


def test_relative_symlink_and_symlinked_dir(root: Path) -> None:
    (root / "link").symlink_to("app/bin")
    (root / "app" / "m2").symlink_to("bin/m.wasm")
    assert resolve_in_rootfs(root, "/link/m.wasm") == root.resolve() / "app/bin/m.wasm"
    assert resolve_in_rootfs(root, "/app/m2") == root.resolve() / "app/bin/m.wasm"


def test_dotdot_above_root_is_refused(root: Path) -> None:
    with pytest.raises(PathEscapeError, match="climbs above"):
        resolve_in_rootfs(root, "/../root/app/bin/m.wasm")


def test_symlink_escape_is_refused(root: Path) -> None:
    (root / "out").symlink_to("../../etc")
    with pytest.raises(PathEscapeError):
        resolve_in_rootfs(root, "/out/passwd")
    (root / "abs").symlink_to("/../etc/passwd")
    with pytest.raises(PathEscapeError):
        resolve_in_rootfs(root, "/abs")


def test_symlink_loop(root: Path) -> None:
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    with pytest.raises(InvalidEntrypointError, match="too many levels"):
        resolve_in_rootfs(root, "/a")


def test_missing(root: Path) -> None:
    with pytest.raises(ModuleNotFoundInRootfsError, match="'/app/nope' does not exist"):
        resolve_in_rootfs(root, "/app/nope/m.wasm")
    with pytest.raises(ModuleNotFoundInRootfsError):
        resolve_in_rootfs(root, "/app/bin/m.wasm/x")


def test_module_path_forms(root: Path) -> None:
    want = root.resolve() / "app/bin/m.wasm"
    assert resolve_module_path(root, "/app/bin/m.wasm") == want
    assert resolve_module_path(root, "bin/m.wasm", cwd="/app") == want
    assert resolve_module_path(root, "./m.wasm", cwd="/app/bin") == want
    assert resolve_module_path(root, "m.wasm", env=["PATH=rel:/usr/bin:/app/bin"]) == want
    with pytest.raises(ModuleNotFoundInRootfsError, match="not found in PATH '/usr/bin'"):
        resolve_module_path(root, "m.wasm", env=["PATH=/usr/bin"])
    with pytest.raises(InvalidEntrypointError, match="empty module path"):
        resolve_module_path(root, "")


def test_path_search_skips_directories(root: Path) -> None:
    (root / "usr" / "bin" / "m.wasm").mkdir()
    assert resolve_module_path(root, "m.wasm", env=["PATH=/usr/bin:/app/bin"]) == root.resolve() / "app/bin/m.wasm"


def test_open_module(root: Path, tmp_path: Path) -> None:
    assert open_module(root, root / "app/bin/m.wasm") == b"\0asm\x01\x00\x00\x00"
    with pytest.raises(InvalidModuleError, match="expected a regular file"):
        open_module(root, root / "app/bin")
    outside = tmp_path / "outside.wasm"
    outside.write_bytes(b"x")
    with pytest.raises(PathEscapeError, match="outside rootfs"):
        open_module(root, outside)
    fifo = root / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InvalidModuleError, match="expected a regular file"):
        open_module(root, fifo)  # O_NONBLOCK: does not hang on a FIFO without writer
