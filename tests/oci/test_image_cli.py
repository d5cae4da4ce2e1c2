from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from runwasm.oci.image_cli import add_image_commands


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="runwasm")
    add_image_commands(parser.add_subparsers(dest="cmd", required=True))
    ns = parser.parse_args(list(argv))
    return int(ns.func(ns))


def test_pack_import_ls_inspect_rm(tmp_path: Path, wasm_module: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNWASM_ROOT", str(tmp_path / "root"))
    out = tmp_path / "img.tar"
    assert _run("image", "pack-wasm", str(wasm_module), "-o", str(out), "--name", "hello:v1", "--arg", "x") == 0
    assert json.loads(capsys.readouterr().out)["ref"] == "docker.io/library/hello:v1"
    assert _run("image", "import", str(out)) == 0
    assert _run("image", "ls") == 0
    listing = capsys.readouterr().out
    assert "docker.io/library/hello:v1" in listing
    assert "wasip1/wasm" in listing
    assert _run("image", "inspect", "hello:v1") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["config"]["Entrypoint"] == ["/hello.wasm"]
    assert _run("image", "rm", "hello:v1") == 0
    assert os.listdir(tmp_path / "root" / "content" / "blobs" / "sha256") == []


def test_errors_are_messages_not_tracebacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("image", "inspect", "--root", str(tmp_path), "nope") == 1
    err = capsys.readouterr().err
    assert err.startswith("runwasm: failed to get image 'nope' (normalised: 'docker.io/library/nope:latest'):"
                          f" not found in the image store {str(tmp_path)!r}; import it with 'runwasm image import")
    assert "runwasm image ls" in err
    assert "--root" in err
    assert err.count("\n") == 1
    assert _run("image", "umount", "--root", str(tmp_path), str(tmp_path / "x")) == 1


@pytest.mark.privileged
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_convert_mount_umount(no_leaks: Path, wasm_module: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tmp = no_leaks
    root = str(tmp / "root")
    _run("image", "pack-wasm", str(wasm_module), "-o", str(tmp / "w.tar"), "--name", "w:1")
    assert _run("image", "import", "--root", root, str(tmp / "w.tar")) == 0
    assert _run("image", "convert", "--root", root, "--erofs", "w:1", "w:erofs") == 0
    mnt = tmp / "mnt"
    assert _run("image", "mount", "--root", root, "w:erofs", str(mnt)) == 0
    assert (mnt / "hello.wasm").read_bytes()[:4] == b"\0asm"
    assert _run("image", "umount", "--root", root, str(mnt)) == 0
    assert not mnt.exists()
