"""runwasm.wasm.verdict: link-check verdicts kept under the node's HMAC key, keyed by everything
that decides linking."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runwasm.wasm import verdict
from runwasm.wasm.http_serve import MIN_CLI, find_cli
from runwasm.wasm.sandbox import Sandbox


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    (d / "hmac.key").write_bytes(os.urandom(32))
    (d / "hmac.key").chmod(0o600)
    return d


@pytest.fixture
def clis(tmp_path: Path) -> tuple[Path, ...]:
    return (find_cli(tmp_path / "cli"), find_cli(tmp_path / "cli", MIN_CLI))


def test_remembered_verdict_is_known(cache: Path, clis: tuple[Path, ...]) -> None:
    key = verdict.verdict_key(b"\0asm\x01\0\0\0", Sandbox(), None, clis)
    assert not verdict.known(cache, key)
    verdict.remember(cache, key)
    assert verdict.known(cache, key)
    assert (cache / verdict.SUBDIR / key).stat().st_mode & 0o777 == 0o600


def test_tampered_or_foreign_verdict_is_ignored(cache: Path, clis: tuple[Path, ...],
                                                caplog: pytest.LogCaptureFixture) -> None:
    key = verdict.verdict_key(b"module", Sandbox(), None, clis)
    other = verdict.verdict_key(b"other", Sandbox(), None, clis)
    verdict.remember(cache, other)
    sub = cache / verdict.SUBDIR
    (sub / key).write_bytes((sub / other).read_bytes())  # another verdict's MAC under this name
    assert not verdict.known(cache, key)
    assert "does not match its MAC" in caplog.text
    (sub / key).write_bytes(b"")
    assert not verdict.known(cache, key)
    verdict.remember(cache, key)
    (cache / "hmac.key").write_bytes(os.urandom(32))  # another node's key
    assert not verdict.known(cache, key)


def test_without_node_key_nothing_is_known_or_written(tmp_path: Path, clis: tuple[Path, ...]) -> None:
    cache = tmp_path / "nokey"
    key = verdict.verdict_key(b"m", Sandbox(), None, clis)
    verdict.remember(cache, key)
    assert not verdict.known(cache, key)
    assert not (cache / verdict.SUBDIR / key).exists()


def test_everything_that_decides_linking_changes_the_key(clis: tuple[Path, ...], tmp_path: Path) -> None:
    base = verdict.verdict_key(b"m", Sandbox(), None, clis)
    assert base == verdict.verdict_key(b"m", Sandbox(), None, clis)
    other_cli = tmp_path / "wasmtime-min-copy"
    other_cli.write_bytes(clis[1].read_bytes() + b"\0")
    variants = [
        verdict.verdict_key(b"m2", Sandbox(), None, clis),
        verdict.verdict_key(b"m", Sandbox(unknown_imports="trap"), None, clis),
        verdict.verdict_key(b"m", Sandbox(fuel=10), None, clis),
        verdict.verdict_key(b"m", Sandbox(features=(("simd", False),)), None, clis),
        verdict.verdict_key(b"m", Sandbox(), "_start", clis),
        verdict.verdict_key(b"m", Sandbox(), "greet", clis),
        verdict.verdict_key(b"m", Sandbox(), None, (clis[0], other_cli)),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)
