"""runwasm.wasm.cli_cache: modules and components precompiled by the real wasmtime CLI once per
machine, handed out (as an fd of the cache file itself) only when their MAC under the cache's key
matches, recompiled when corrupt."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runwasm.oci import steps
from runwasm.wasm import cli_cache
from runwasm.wasm.http_serve import find_cli
from tests.conftest import built_fixture


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, bytes]:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    (cache / "hmac.key").write_bytes(os.urandom(32))
    (cache / "hmac.key").chmod(0o600)
    data = built_fixture("wasm", "http_hello.wasm").read_bytes()
    return find_cli(tmp_path / "cli"), cache, data


def _read(fd: int) -> bytes:
    with open(f"/proc/self/fd/{fd}", "rb") as f:
        return f.read()


def test_compiles_once_then_loads(setup: tuple[Path, Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    cli, cache, data = setup
    first = cli_cache.load(cli, ["-W", "fuel=100"], data, cache)
    assert first is not None
    artifact = _read(first)
    assert artifact[:4] == b"\x7fELF"  # wasmtime's precompiled format

    def no_compile(*a: object, **k: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(subprocess, "run", no_compile)
    second = cli_cache.load(cli, ["-W", "fuel=100"], data, cache)
    assert second is not None
    assert _read(second) == artifact
    for f in (first, second):
        os.close(f)


def test_each_load_is_a_step_that_says_hit_or_miss(setup: tuple[Path, Path, bytes]) -> None:
    """``wasm.cli_artifact``: a miss when it compiled, a hit when the artifact was there (what the
    debug log and the compile cache metric count); no verdict when the cache is unusable."""
    import json

    cli, cache, data = setup
    r, w = os.pipe()
    try:
        steps.install(w, spans=False)
        fds = [cli_cache.load(cli, [], data, cache), cli_cache.load(cli, [], data, cache)]
        os.unlink(cache / "hmac.key")
        fds.append(cli_cache.load(cli, [], data, cache))
    finally:
        steps.install(None)
        os.close(w)
    with os.fdopen(r, "rb") as f:
        recs = [json.loads(line) for line in f.read().splitlines()]
    assert fds[0] is not None
    assert fds[1] is not None
    assert fds[2] is None
    for fd in fds[:2]:
        assert fd is not None
        os.close(fd)
    assert [(x["name"], x["attrs"].get(steps.CACHE_HIT_ATTR)) for x in recs] == [
        ("wasm.cli_artifact", False), ("wasm.cli_artifact", True), ("wasm.cli_artifact", None)]


def test_other_flags_are_another_entry(setup: tuple[Path, Path, bytes]) -> None:
    cli, _cache, data = setup
    assert cli_cache.cache_key(cli, [], data) != cli_cache.cache_key(cli, ["-W", "gc=n"], data)


def test_corrupt_or_foreign_entry_is_recompiled_never_loaded(setup: tuple[Path, Path, bytes]) -> None:
    cli, cache, data = setup
    got = cli_cache.load(cli, [], data, cache)
    assert got is not None
    good = _read(got)
    entry = cache / cli_cache.SUBDIR / f"{cli_cache.cache_key(cli, [], data)}.cwasm"
    entry.write_bytes(b"\x7fELF" + b"\0" * 100)  # not what runwasm wrote: the MAC no longer matches
    again = cli_cache.load(cli, [], data, cache)
    assert again is not None
    assert _read(again) == good
    assert entry.read_bytes() == good


def test_unusable_cache_serves_without_it(setup: tuple[Path, Path, bytes]) -> None:
    cli, cache, data = setup
    cache.chmod(0o777)  # writable by others: nothing from it is trusted
    assert cli_cache.load(cli, [], data, cache) is None
    cache.chmod(0o700)
    (cache / "hmac.key").unlink()
    assert cli_cache.load(cli, [], data, cache) is None


def test_hands_out_the_verified_cache_file_itself(setup: tuple[Path, Path, bytes]) -> None:
    """Not a per-task copy: the CLI maps the cache file, so tasks share its pages."""
    cli, cache, data = setup
    got = cli_cache.load(cli, [], data, cache)
    assert got is not None
    entry = cache / cli_cache.SUBDIR / f"{cli_cache.cache_key(cli, [], data)}.cwasm"
    st, want = os.fstat(got), entry.stat()
    assert (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino)
    assert os.lseek(got, 0, os.SEEK_CUR) == 0
    assert os.get_inheritable(got) is False
    os.close(got)


def test_runner_is_part_of_the_key(setup: tuple[Path, Path, bytes], tmp_path: Path) -> None:
    cli, _cache, data = setup
    runner = find_cli(tmp_path / "cli", "wasmtime-min")
    assert cli_cache.cache_key(cli, [], data) != cli_cache.cache_key(cli, [], data, runner)


def test_entry_is_readable_by_the_container_user_through_its_fd(setup: tuple[Path, Path, bytes]) -> None:
    """The CLI reopens ``/proc/self/fd/N`` as the container's user: the file is 0644 (an older 0600
    entry is fixed), its directory stays 0700."""
    cli, cache, data = setup
    got = cli_cache.load(cli, [], data, cache)
    assert got is not None
    entry = cache / cli_cache.SUBDIR / f"{cli_cache.cache_key(cli, [], data)}.cwasm"
    assert (entry.stat().st_mode & 0o777, entry.parent.stat().st_mode & 0o777) == (0o644, 0o700)
    os.close(got)
    entry.chmod(0o600)
    again = cli_cache.load(cli, [], data, cache)
    assert again is not None
    assert entry.stat().st_mode & 0o777 == 0o644
    os.close(again)
