"""runwasm.wasm.fast_min through the real workload body (``child.main``): a module whose link-check
verdict is cached gets its wasmtime-min plan without wasmtime-py loaded; anything else takes the
full check, whose errors stay Create errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import wasmtime

from runwasm.wasm import verdict
from tests.wasm import harness


def payload(rootfs: Path, cache_dir: Path, *args: str, **kw: Any) -> dict[str, Any]:
    return {"rootfs": str(rootfs), "args": list(args), "cache_dir": str(cache_dir), **kw}


def _created(p: dict[str, Any]) -> tuple[bool, tuple[int, str, str, str]]:
    """Create (until ready), note whether wasmtime-py's library is mapped, then run to the exit."""
    child = harness.spawn(p)
    msg = child.handshake()
    assert msg["type"] == "ready", (msg, child.finish())
    with open(f"/proc/{child.proc.pid}/maps") as f:
        loaded = "_libwasmtime" in f.read()
    child.start()
    return loaded, child.finish()


def _verdicts(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / verdict.SUBDIR).glob("*")) if (cache_dir / verdict.SUBDIR).is_dir() else []


def test_second_create_needs_no_wasmtime_py(rootfs: Path, cache_dir: Path) -> None:
    loaded, (rc, out, _, log) = _created(payload(rootfs, cache_dir, "/hello.wasm"))
    assert (loaded, rc, out) == (True, 0, "hello from wasm\n"), log
    assert len(_verdicts(cache_dir)) == 1
    loaded, (rc, out, _, log) = _created(payload(rootfs, cache_dir, "/hello.wasm", "x"))
    assert (loaded, rc, out) == (False, 0, "hello from wasm\n"), log


def test_tampered_verdict_is_ignored(rootfs: Path, cache_dir: Path) -> None:
    _created(payload(rootfs, cache_dir, "/hello.wasm"))
    (entry,) = _verdicts(cache_dir)
    entry.write_bytes(b"\0" * 32)
    loaded, (rc, out, _, log) = _created(payload(rootfs, cache_dir, "/hello.wasm"))
    assert (loaded, rc, out) == (True, 0, "hello from wasm\n"), log
    assert "does not match its MAC" in log
    loaded, _ = _created(payload(rootfs, cache_dir, "/hello.wasm"))  # the full check wrote it again
    assert not loaded


def test_changed_config_misses(rootfs: Path, cache_dir: Path) -> None:
    _created(payload(rootfs, cache_dir, "/hello.wasm"))
    loaded, (rc, out, _, log) = _created(payload(rootfs, cache_dir, "/hello.wasm", sandbox={"fuel": 1_000_000}))
    assert (loaded, rc, out) == (True, 0, "hello from wasm\n"), log
    loaded, (rc, out, _, log) = _created(payload(rootfs, cache_dir, "/hello.wasm#greet"))
    assert (loaded, rc, out) == (True, 0, "greetings from wasm\n"), log
    assert len(_verdicts(cache_dir)) == 3


def _expect_error(p: dict[str, Any]) -> dict[str, Any]:
    child = harness.spawn(p)
    msg = child.handshake()
    rc, out, _err, _log = child.finish()
    assert (msg["type"], rc, out) == ("error", 1, ""), msg
    return msg


def test_errors_stay_create_errors_with_verdicts_cached(rootfs: Path, cache_dir: Path) -> None:
    _created(payload(rootfs, cache_dir, "/hello.wasm"))
    assert _expect_error(payload(rootfs, cache_dir, "/hello.wasm#nope"))["kind"] == "ExportNotFoundError"
    good = (rootfs / "hello.wasm").read_bytes()
    (rootfs / "hello.wasm").write_bytes(wasmtime.wat2wasm('(module (import "env" "f" (func)) (func (export "_start")))'))
    for _ in range(2):  # a failed check records nothing
        msg = _expect_error(payload(rootfs, cache_dir, "/hello.wasm"))
        assert msg["kind"] == "LinkError", msg
        assert "env::f" in msg["message"]
    assert len(_verdicts(cache_dir)) == 1
    (rootfs / "hello.wasm").write_bytes(good)
    loaded, (rc, out, _, log) = _created(payload(rootfs, cache_dir, "/hello.wasm"))
    assert (loaded, rc, out) == (False, 0, "hello from wasm\n"), log
