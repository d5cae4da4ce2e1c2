"""shim/server/image_cache.py against an in-memory content store (one layer; the real daemons are
driven in tests/integration/test_ctr_compile_cache.py). Compilation is real (the child process)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime

from runwasm.oci.digest import Digest
from runwasm.shim.common.errors import NotFoundError, UnavailableError
from runwasm.shim.server.image_cache import (
    MAC_LABEL,
    REF_LABEL,
    artifact_key,
    artifact_mac,
    compiled_for_layer,
)
from runwasm.wasm.engine import make_engine
from runwasm.wasm.sandbox import Sandbox

HELLO_WAT = (Path(__file__).resolve().parents[3] / "fixtures" / "wasm" / "hello.wat").read_text()


class FakeStore:
    """Info/Read/Write/Update/lease of one namespace, as ``ContainerdClient`` exposes them."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.leases: list[str] = []
        self.fail_write = False

    def add(self, data: bytes) -> Digest:
        d = Digest.of_bytes(data)
        self.blobs[str(d)] = data
        self.labels.setdefault(str(d), {})
        return d

    def info_labels(self, digest: Digest) -> dict[str, str]:
        if str(digest) not in self.blobs:
            raise NotFoundError(f"content {digest} not found")
        return dict(self.labels[str(digest)])

    def read_bytes(self, digest: Digest) -> bytes:
        if str(digest) not in self.blobs:
            raise NotFoundError(f"content {digest} not found")
        return self.blobs[str(digest)]

    @contextlib.contextmanager
    def lease(self, purpose: str) -> Iterator[str]:
        self.leases.append(purpose)
        yield "lease-1"

    def write_blob(self, data: bytes, ref: str, lease_id: str, labels: dict[str, str] | None = None) -> Digest:
        assert lease_id == "lease-1"
        if self.fail_write:
            raise UnavailableError("containerd went away")
        d = self.add(data)
        self.labels[str(d)].update(labels or {})
        return d

    def update_labels(self, digest: Digest, labels: dict[str, str]) -> dict[str, str]:
        self.labels[str(digest)].update(labels)
        return dict(self.labels[str(digest)])


@pytest.fixture
def layer(tmp_path: Path) -> tuple[FakeStore, Digest, Path, Path, Path]:
    store = FakeStore()
    wasm = bytes(wasmtime.wat2wasm(HELLO_WAT))
    digest = store.add(wasm)
    module = tmp_path / "layer.wasm"
    module.write_bytes(wasm)
    out = tmp_path / "out"
    out.mkdir()
    return store, digest, module, tmp_path / "cache", out


def test_key_and_mac() -> None:
    a = Digest.of_bytes(b"a")
    keys = {artifact_key("id1", "module", a), artifact_key("id2", "module", a), artifact_key("id1", "component", a),
            artifact_key("id1", "module", Digest.of_bytes(b"b"))}
    assert len(keys) == 4
    k = artifact_key("id1", "module", a)
    assert artifact_mac(b"1" * 32, k, a) != artifact_mac(b"2" * 32, k, a)
    assert artifact_mac(b"1" * 32, k, a) != artifact_mac(b"1" * 32, k, Digest.of_bytes(b"b"))


def test_compile_publish_then_load(layer: tuple[FakeStore, Digest, Path, Path, Path]) -> None:
    store, digest, module, cache, out = layer
    first = compiled_for_layer(store, digest, module, Sandbox(), cache, out)  # type: ignore[arg-type]
    assert first is not None
    assert (first.source, first.published) == ("compiled", True)
    assert store.leases == ["cwasm"]
    labels = store.labels[str(digest)]
    assert labels[REF_LABEL + first.key] == str(first.digest)
    secret = (cache / "hmac.key").read_bytes()
    assert labels[MAC_LABEL + first.key] == artifact_mac(secret, first.key, first.digest)
    assert store.blobs[str(first.digest)] == first.path.read_bytes()
    first.path.unlink()
    again = compiled_for_layer(store, digest, module, Sandbox(), cache, out)  # type: ignore[arg-type]
    assert again is not None
    assert (again.source, again.digest) == ("content-store", first.digest)
    wasmtime.Module.deserialize_file(make_engine(), str(again.path))


@pytest.mark.parametrize("tamper", ["forged-mac", "no-mac", "gone", "not-a-digest", "other-node"])
def test_unverified_artifact_is_recompiled_never_loaded(layer: tuple[FakeStore, Digest, Path, Path, Path],
                                                        tamper: str, caplog: pytest.LogCaptureFixture) -> None:
    store, digest, module, cache, out = layer
    first = compiled_for_layer(store, digest, module, Sandbox(), cache, out)  # type: ignore[arg-type]
    assert first is not None
    labels = store.labels[str(digest)]
    junk = store.add(b"\x7fELF" + os.urandom(64))
    if tamper == "forged-mac":
        labels[REF_LABEL + first.key] = str(junk)
        labels[MAC_LABEL + first.key] = hashlib.sha256(b"guess").hexdigest()
    elif tamper == "no-mac":
        labels[REF_LABEL + first.key] = str(junk)
        del labels[MAC_LABEL + first.key]
    elif tamper == "gone":
        del store.blobs[str(first.digest)]
    elif tamper == "not-a-digest":
        labels[REF_LABEL + first.key] = "sha256:nope"
    else:  # the same labels, verified under another node's key
        (cache / "hmac.key").unlink()
    with caplog.at_level(logging.WARNING):
        redo = compiled_for_layer(store, digest, module, Sandbox(), cache, out)  # type: ignore[arg-type]
    assert redo is not None
    assert redo.source == "compiled"
    assert "is unusable, recompiling; it is not loaded" in caplog.text
    assert labels[REF_LABEL + first.key] == str(redo.digest)
    assert redo.path.read_bytes() != store.blobs[str(junk)]


def test_engine_settings_select_their_own_artifact(layer: tuple[FakeStore, Digest, Path, Path, Path]) -> None:
    store, digest, module, cache, out = layer
    a = compiled_for_layer(store, digest, module, Sandbox(), cache, out)  # type: ignore[arg-type]
    b = compiled_for_layer(store, digest, module, Sandbox(fuel=10), cache, out)  # type: ignore[arg-type]
    c = compiled_for_layer(store, digest, module, Sandbox(max_memory=1 << 20), cache, out)  # type: ignore[arg-type]
    assert a is not None
    assert b is not None
    assert c is not None
    assert a.key != b.key
    assert (b.source, c.source, c.key) == ("compiled", "content-store", a.key)  # limits change no code


def test_publish_failure_still_gives_the_artifact(layer: tuple[FakeStore, Digest, Path, Path, Path],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    store, digest, module, cache, out = layer
    store.fail_write = True
    with caplog.at_level(logging.WARNING):
        got = compiled_for_layer(store, digest, module, Sandbox(), cache, out)  # type: ignore[arg-type]
    assert got is not None
    assert (got.source, got.published) == ("compiled", False)
    assert "cannot store compiled artifact" in caplog.text
    assert not any(k.startswith(REF_LABEL) for k in store.labels[str(digest)])


def test_unusable_cases_leave_it_to_the_workload(layer: tuple[FakeStore, Digest, Path, Path, Path],
                                                 tmp_path: Path) -> None:
    store, digest, module, cache, out = layer
    wat = tmp_path / "m.wat"
    wat.write_text(HELLO_WAT)
    assert compiled_for_layer(store, digest, wat, Sandbox(), cache, out) is None  # type: ignore[arg-type]
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\x01\0\0\0\xff")
    assert compiled_for_layer(store, digest, bad, Sandbox(), cache, out) is None  # type: ignore[arg-type]
    cache.mkdir(mode=0o700, exist_ok=True)
    os.chmod(cache, 0o777)
    assert compiled_for_layer(store, digest, module, Sandbox(), cache, out) is None  # type: ignore[arg-type]
