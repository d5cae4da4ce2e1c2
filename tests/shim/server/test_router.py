"""Choosing the executor from real files in a rootfs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from runwasm.oci.runtime_spec import RuntimeSpec
from runwasm.shim.common.errors import InvalidArgumentError, NotFoundError
from runwasm.shim.server.router import EXECUTOR_ANNOTATION, route
from tests.conftest import built_fixture


def _spec(args: list[str], *, env: list[str] | None = None, cwd: str = "/",
          annotations: dict[str, str] | None = None) -> RuntimeSpec:
    doc: dict[str, Any] = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                           "process": {"args": args, "cwd": cwd, "env": env or ["PATH=/usr/bin:/bin"]},
                           "annotations": annotations or {}}
    return RuntimeSpec.from_json(doc)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    for d in ("bin", "usr/bin", "app", "opt/tools"):
        (r / d).mkdir(parents=True)
    shutil.copyfile(built_fixture("wasm", "hello.wasm"), r / "app" / "hello.wasm")
    shutil.copyfile(built_fixture("wasm", "hello.wasm"), r / "usr" / "bin" / "hellow")
    (r / "app" / "mod.wat").write_text(";; comment\n(module (func (export \"_start\")))\n")
    busybox = Path("/bin/busybox")
    if busybox.exists():
        shutil.copyfile(busybox, r / "bin" / "sh")
    else:
        (r / "bin" / "sh").write_bytes(b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 56)
    (r / "app" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (r / "app" / "junk").write_bytes(b"MZ\x90\x00garbage")
    (r / "opt" / "tools" / "tool").write_bytes(b"\x00asm\x01\x00\x00\x00")
    return r


@pytest.mark.parametrize(("args", "kind", "reason"), [
    (["/app/hello.wasm"], "wasm", "Wasm module"),
    (["/app/mod.wat"], "wasm", "Wasm"),
    (["/bin/sh", "-c", "true"], "linux", "ELF binary"),
    (["/app/run.sh"], "linux", "#! script"),
    (["hellow"], "wasm", "Wasm module"),        # PATH search
    (["sh"], "linux", "ELF"),                   # PATH search
    (["/app/hello.wasm#greet"], "wasm", "Wasm module"),
    (["hellow#greet"], "wasm", "Wasm"),
])
def test_routes(rootfs: Path, args: list[str], kind: str, reason: str) -> None:
    r = route(_spec(args), rootfs)
    assert r.kind == kind
    assert reason in r.reason
    assert repr(args[0]) in r.reason


def test_cwd_relative(rootfs: Path) -> None:
    assert route(_spec(["./hello.wasm"], cwd="/app"), rootfs).kind == "wasm"


def test_spec_path_is_used(rootfs: Path) -> None:
    with pytest.raises(NotFoundError):
        route(_spec(["tool"]), rootfs)
    assert route(_spec(["tool"], env=["PATH=/opt/tools"]), rootfs).kind == "wasm"


@pytest.mark.parametrize("forced", ["wasm", "linux"])
def test_forced_annotation(rootfs: Path, forced: str) -> None:
    r = route(_spec(["/does/not/exist"], annotations={EXECUTOR_ANNOTATION: forced}), rootfs)
    assert r.kind == forced
    assert EXECUTOR_ANNOTATION in r.reason


def test_bad_forced_annotation(rootfs: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="expected 'wasm' or 'linux'"):
        route(_spec(["/app/hello.wasm"], annotations={EXECUTOR_ANNOTATION: "gvisor"}), rootfs)


def test_garbage(rootfs: Path) -> None:
    with pytest.raises(InvalidArgumentError) as e:
        route(_spec(["/app/junk"]), rootfs)
    msg = str(e.value)
    assert "'/app/junk'" in msg
    assert str(rootfs / "app" / "junk") in msg
    for checked in ("Wasm", "WAT", "ELF", "#!"):
        assert checked in msg
    assert "MZ" in msg  # what was found


def test_export_on_elf_is_invalid(rootfs: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="ELF"):
        route(_spec(["/bin/sh#main"]), rootfs)


@pytest.mark.parametrize("arg0", ["/app/missing.wasm", "nosuchcmd", "/app/hello.wasm/x"])
def test_missing(rootfs: Path, arg0: str) -> None:
    with pytest.raises(NotFoundError) as e:
        route(_spec([arg0]), rootfs)
    assert repr(arg0) in str(e.value)


def test_empty_args(rootfs: Path) -> None:
    spec = RuntimeSpec.from_json({"ociVersion": "1.0.2", "process": {"args": [], "cwd": "/"}})
    with pytest.raises(InvalidArgumentError, match="process.args is empty"):
        route(spec, rootfs)


@pytest.mark.parametrize(("args", "found"), [
    (["/app/hello.wasm"], True), (["hellow"], True), (["/app/hello.wasm#greet"], True),
    (["/module.wasm"], False), ([""], False), (["#init"], False), (["/app"], False), (["../../etc"], False),
])
def test_module_in_rootfs(rootfs: Path, args: list[str], found: bool) -> None:
    from runwasm.shim.server.router import module_in_rootfs

    assert module_in_rootfs(_spec(args), rootfs) is found


@pytest.mark.parametrize(("args", "found"), [
    (["/app/hello.wasm"], "app/hello.wasm"), (["hellow"], "usr/bin/hellow"), (["/app/hello.wasm#_start"], "app/hello.wasm"),
    (["/app"], None), (["/does/not/exist"], None), ([""], None), ([], None),
])
def test_module_file_is_what_route_would_resolve(rootfs: Path, args: list[str], found: str | None) -> None:
    """Create resolves ``args[0]`` once (``module_file``, for the image lookup) and hands the file
    to ``route``, which then classifies that file without resolving the path again."""
    from runwasm.shim.server.router import module_file, module_in_rootfs

    got = module_file(_spec(args), rootfs)
    assert got == (Path(rootfs.resolve(), found) if found else None)
    assert module_in_rootfs(_spec(args), rootfs) is (found is not None)
    if got is not None:
        assert route(_spec(args), rootfs, module=got) == route(_spec(args), rootfs)


def test_route_classifies_the_module_file_it_is_given(rootfs: Path) -> None:
    # args[0] names the Wasm module, but route reads the file it was handed: the ELF binary
    r = route(_spec(["/app/hello.wasm"]), rootfs, module=rootfs / "bin" / "sh")
    assert r.kind == "linux"
