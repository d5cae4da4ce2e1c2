"""runwasm.wasm.cli_cache: components precompiled by the real wasmtime CLI once per machine,
loaded only when their MAC under the cache's key matches, recompiled when corrupt."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runwasm.wasm import cli_cache
from runwasm.wasm.http_serve import find_cli
from tests.conftest import built_fixture


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, bytes, int]:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    (cache / "hmac.key").write_bytes(os.urandom(32))
    (cache / "hmac.key").chmod(0o600)
    data = built_fixture("wasm", "http_hello.wasm").read_bytes()
    fd = os.memfd_create("t", os.MFD_CLOEXEC)
    os.write(fd, data)
    return find_cli(tmp_path / "cli"), cache, data, fd


def _read(fd: int) -> bytes:
    with open(f"/proc/self/fd/{fd}", "rb") as f:
        return f.read()


def test_compiles_once_then_loads(setup: tuple[Path, Path, bytes, int], monkeypatch: pytest.MonkeyPatch) -> None:
    cli, cache, data, fd = setup
    first = cli_cache.load(cli, ["-W", "fuel=100"], data, fd, cache)
    assert first is not None
    artifact = _read(first)
    assert artifact[:4] == b"\x7fELF"  # wasmtime's precompiled format

    def no_compile(*a: object, **k: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(subprocess, "run", no_compile)
    second = cli_cache.load(cli, ["-W", "fuel=100"], data, fd, cache)
    assert second is not None
    assert _read(second) == artifact
    for f in (first, second, fd):
        os.close(f)


def test_other_flags_are_another_entry(setup: tuple[Path, Path, bytes, int]) -> None:
    cli, _cache, data, _fd = setup
    assert cli_cache.cache_key(cli, [], data) != cli_cache.cache_key(cli, ["-W", "gc=n"], data)


def test_corrupt_or_foreign_entry_is_recompiled_never_loaded(setup: tuple[Path, Path, bytes, int]) -> None:
    cli, cache, data, fd = setup
    got = cli_cache.load(cli, [], data, fd, cache)
    assert got is not None
    good = _read(got)
    entry = cache / cli_cache.SUBDIR / f"{cli_cache.cache_key(cli, [], data)}.cwasm"
    entry.write_bytes(b"\x7fELF" + b"\0" * 100)  # not what runwasm wrote: the MAC no longer matches
    again = cli_cache.load(cli, [], data, fd, cache)
    assert again is not None
    assert _read(again) == good
    assert entry.read_bytes() == good


def test_unusable_cache_serves_without_it(setup: tuple[Path, Path, bytes, int]) -> None:
    cli, cache, data, fd = setup
    cache.chmod(0o777)  # writable by others: nothing from it is trusted
    assert cli_cache.load(cli, [], data, fd, cache) is None
    cache.chmod(0o700)
    (cache / "hmac.key").unlink()
    assert cli_cache.load(cli, [], data, fd, cache) is None
