"""Magic-byte / WAT classification and the ``path#export`` syntax."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runwasm.wasm.detect import classify, classify_bytes, parse_entrypoint, wat_flavour


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\0asm\x01\x00\x00\x00", "module"),
        (b"\0asm\x01\x00\x00\x00\x01\x04", "module"),
        (b"\0asm\x0d\x00\x01\x00", "component"),
        (b"\0asm\x0e\x00\x01\x00", "component"),  # a future component version still routes to wasm
        (b"\0asm\x02\x00\x00\x00", "module"),  # unknown core version: wasmtime reports it
        (b"\0asm\x01\x00", None),  # truncated header
        (b"\0as", None),
        (b"", None),
        (b"\x7fELF\x02\x01\x01\x00", None),
        (b"#!/bin/sh\necho hi\n", None),
        (b"(module)", "wat"),
        (b"  \n\t(module $m (func))", "wat"),
        (b";; comment\n(module)", "wat"),
        (b"(; block (; nested ;) ;)(component)", "wat"),
        (b"\xef\xbb\xbf(module)", "wat"),
        (b"( module)", "wat"),
        (b"(modules)", None),
        (b"(func)", None),
        (b"(; unterminated (module)", None),
        (b";; only a comment", None),
    ],
)
def test_classify_bytes(head: bytes, kind: str | None) -> None:
    assert classify_bytes(head) == kind


def test_wat_flavour() -> None:
    assert wat_flavour(b"(component (core module))") == "component"
    assert wat_flavour(b"(module)") == "module"
    assert wat_flavour(b"(\n;; x\nmodule)") == "module"
    assert wat_flavour(b"hello") is None


def test_classify_file(tmp_path: Path) -> None:
    f = tmp_path / "m"
    f.write_bytes(b"\0asm\x01\x00\x00\x00")
    assert classify(f) == "module"
    f.write_text(";; x\n(module)\n")
    assert classify(f) == "wat"
    f.write_text("")
    assert classify(f) is None
    with pytest.raises(OSError):
        classify(tmp_path / "missing")


@pytest.mark.parametrize(
    ("arg0", "expected"),
    [
        ("/app.wasm", ("/app.wasm", None)),
        ("/app.wasm#entry", ("/app.wasm", "entry")),
        ("/app.wasm#", ("/app.wasm", None)),
        ("#init", ("", "init")),
        ("app.wasm#a#b", ("app.wasm", "a#b")),
        ("", ("", None)),
    ],
)
def test_parse_entrypoint(arg0: str, expected: tuple[str, str | None]) -> None:
    assert parse_entrypoint(arg0) == expected


def test_router_modules_do_not_import_wasmtime() -> None:
    code = (
        "import sys\n"
        "import runwasm.wasm.detect, runwasm.wasm.payload, runwasm.wasm.resolve, runwasm.wasm.errors\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'wasmtime']\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
