"""The on-disk compile cache: miss, hit, corrupt/foreign entries, WAT and components, unsafe dirs,
concurrent first runs (compiled once)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime
import wasmtime.component

from runwasm.wasm.cache import CACHE_ENV, DEFAULT_CACHE_DIR, CompileCache, cache_dir_from
from runwasm.wasm.engine import make_engine
from runwasm.wasm.errors import InvalidModuleError

HELLO_WAT = (Path(__file__).resolve().parents[2] / "fixtures" / "wasm" / "hello.wat").read_bytes()
COMPONENT_WAT = (Path(__file__).resolve().parents[2] / "fixtures" / "wasm" / "component_run_ok.wat").read_bytes()


def entries(d: Path) -> list[Path]:
    """The artifacts (``.cwasm``) under ``d``."""
    return sorted(p for p in d.rglob("*.cwasm") if p.is_file())


def stray_files(d: Path) -> list[Path]:
    """Temporary files a writer left behind (should be none)."""
    return sorted(p for p in d.rglob(".*") if p.is_file())


def test_miss_then_hit_across_engines(cache_dir: Path) -> None:
    wasm = bytes(wasmtime.wat2wasm(HELLO_WAT.decode()))
    first = CompileCache(make_engine(), cache_dir).load(wasm)
    assert (first.source, first.flavour) == ("compiled", "module")
    assert first.path is not None
    assert first.path.exists()
    assert entries(cache_dir) == [first.path]
    second = CompileCache(make_engine(), cache_dir).load(wasm)
    assert (second.source, second.path) == ("hit", first.path)
    assert isinstance(second.artifact, wasmtime.Module)
    assert [e.name for e in second.artifact.exports] == [e.name for e in first.artifact.exports]


def test_wat_is_keyed_on_text_and_differs_from_binary(cache_dir: Path) -> None:
    cache = CompileCache(make_engine(), cache_dir)
    a = cache.load(HELLO_WAT)
    b = cache.load(HELLO_WAT, "wat")
    c = cache.load(bytes(wasmtime.wat2wasm(HELLO_WAT.decode())))
    assert (a.source, b.source, c.source) == ("compiled", "hit", "compiled")
    assert a.path == b.path != c.path


def test_component_round_trip(cache_dir: Path) -> None:
    cache = CompileCache(make_engine(), cache_dir)
    first = cache.load(COMPONENT_WAT)
    assert (first.source, first.flavour) == ("compiled", "component")
    again = CompileCache(make_engine(), cache_dir).load(COMPONENT_WAT)
    assert again.source == "hit"
    assert isinstance(again.artifact, wasmtime.component.Component)


def test_corrupt_entry_is_recompiled_and_replaced(cache_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = CompileCache(make_engine(), cache_dir).load(HELLO_WAT)
    assert first.path is not None
    good = first.path.read_bytes()
    first.path.write_bytes(b"garbage, not an ELF artifact")
    with caplog.at_level(logging.WARNING, logger="runwasm.wasm.cache"):
        again = CompileCache(make_engine(), cache_dir).load(HELLO_WAT)
    assert again.source == "compiled"
    assert "unusable, recompiling" in caplog.text
    assert first.path.read_bytes() == good
    assert CompileCache(make_engine(), cache_dir).load(HELLO_WAT).source == "hit"


def test_other_fingerprint_gets_other_key(cache_dir: Path) -> None:
    a = CompileCache(make_engine(), cache_dir).load(HELLO_WAT)
    b = CompileCache(make_engine(), cache_dir, fingerprint="other").load(HELLO_WAT)
    assert b.source == "compiled"
    assert a.path != b.path


def test_unsafe_directory_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="runwasm.wasm.cache"):
        loaded = CompileCache(make_engine(), d).load(HELLO_WAT)
    assert (loaded.source, loaded.path) == ("uncached", None)
    assert "group/other-writable" in caplog.text
    assert entries(d) == []


def test_unwritable_location_degrades_to_uncached(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    loaded = CompileCache(make_engine(), blocker / "cache").load(HELLO_WAT)
    assert loaded.source == "uncached"


def test_invalid_inputs(cache_dir: Path) -> None:
    cache = CompileCache(make_engine(), cache_dir)
    with pytest.raises(InvalidModuleError, match="expected a wasm binary"):
        cache.load(b"plain text")
    with pytest.raises(InvalidModuleError, match="failed to compile WAT"):
        cache.load(b"(module (func (result i32)))")
    with pytest.raises(InvalidModuleError, match="failed to compile wasm module"):
        cache.load(b"\0asm\x01\x00\x00\x00\x05")
    assert entries(cache_dir) == []


def test_directory_selection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_dir_from() == Path(DEFAULT_CACHE_DIR)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_dir_from() == tmp_path / "env"
    assert cache_dir_from(tmp_path / "arg") == tmp_path / "arg"


RACER = """
import sys
from runwasm.wasm.cache import CompileCache
from runwasm.wasm.engine import make_engine
sys.stdin.read()  # start together
print(CompileCache(make_engine(), sys.argv[1]).load(open(sys.argv[2], 'rb').read()).source)
"""


def test_concurrent_processes_share_one_entry(cache_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "m.wat"
    # Big enough that compiles overlap: many functions.
    funcs = "".join(f'(func (export "f{i}") (result i32) (i32.const {i}))' for i in range(3000))
    src.write_text(f"(module {funcs})")
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(cache_dir), str(src)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]  # 6, not 8: 2 cores; the flock makes the count irrelevant to the outcome
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()  # all racers are started before any of them reads its module
    outs = []
    for p in procs:
        assert p.stdout is not None
        outs.append(p.stdout.read().strip())
        p.stdout.close()
        p.wait()
    assert [p.returncode for p in procs] == [0] * 6
    assert sorted(outs) == ["compiled"] + ["hit"] * 5, outs  # compiled exactly once: the others waited
    files = entries(cache_dir)
    assert len(files) == 1, files
    assert stray_files(cache_dir) == []
    assert CompileCache(make_engine(), cache_dir).load(src.read_bytes()).source == "hit"
    assert os.stat(cache_dir / files[0].parent.name).st_mode & 0o777 == 0o700


def test_foreign_artifact_without_mac_is_never_loaded(cache_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A valid wasmtime artifact of *another* module planted at the entry's name is not loaded."""
    wasm = bytes(wasmtime.wat2wasm(HELLO_WAT.decode()))
    path, _ = CompileCache(make_engine(), cache_dir).path_for(wasm, "module")
    path.parent.mkdir(parents=True, mode=0o700)
    other = wasmtime.Module(make_engine(), '(module (func (export "planted")))')
    path.write_bytes(other.serialize())
    with caplog.at_level(logging.WARNING, logger="runwasm.wasm.cache"):
        loaded = CompileCache(make_engine(), cache_dir).load(wasm)
    assert loaded.source == "compiled"
    assert isinstance(loaded.artifact, wasmtime.Module)
    assert "planted" not in [e.name for e in loaded.artifact.exports]
    assert "MAC is missing or does not match" in caplog.text
    assert CompileCache(make_engine(), cache_dir).load(wasm).source == "hit"


def test_entry_copied_from_another_cache_is_not_loaded(tmp_path: Path) -> None:
    """Entry and MAC copied from another cache directory: signed with another key, recompiled."""
    a, b = tmp_path / "a", tmp_path / "b"
    first = CompileCache(make_engine(), a).load(HELLO_WAT)
    assert first.path is not None
    CompileCache(make_engine(), b).load(b"(module)")  # makes b's own key
    target = b / first.path.relative_to(a)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(first.path.read_bytes())
    Path(f"{target}.mac").write_bytes(Path(f"{first.path}.mac").read_bytes())
    assert CompileCache(make_engine(), b).load(HELLO_WAT).source == "compiled"


def test_key_file_is_private(cache_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    CompileCache(make_engine(), cache_dir).load(HELLO_WAT)
    key = cache_dir / "hmac.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert len(key.read_bytes()) == 32
    key.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="runwasm.wasm.cache"):
        assert CompileCache(make_engine(), cache_dir).load(HELLO_WAT).source == "uncached"
    assert "not a 32-byte file private" in caplog.text


def test_precompiled_artifact_is_loaded_or_refused(cache_dir: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """``load_precompiled``: the shim server's artifact deserializes as "precompiled"; one that does not
    deserialize (truncated, garbage) is None, logged, and ``load`` then compiles as usual."""
    engine = make_engine()
    wasm = bytes(wasmtime.wat2wasm(HELLO_WAT.decode()))
    good = tmp_path / "good.cwasm"
    good.write_bytes(bytes(wasmtime.Module(engine, wasm).serialize()))
    cache = CompileCache(engine, cache_dir)
    loaded = cache.load_precompiled(str(good), wasm, "module")
    assert loaded is not None
    assert (loaded.source, loaded.flavour) == ("precompiled", "module")
    assert isinstance(loaded.artifact, wasmtime.Module)
    bad = tmp_path / "bad.cwasm"
    bad.write_bytes(good.read_bytes()[:200])
    with caplog.at_level(logging.WARNING):
        assert cache.load_precompiled(str(bad), wasm, "module") is None
    assert "precompiled artifact" in caplog.text
    assert "unusable" in caplog.text
    assert entries(cache_dir) == []
