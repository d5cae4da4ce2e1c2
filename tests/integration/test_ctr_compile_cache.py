"""Compiled artifacts of OCI Wasm layers in containerd's content store (shim/server/image_cache.py).

Each test module gets private daemons with a private node cache root (``RUNWASM_WASM_CACHE``,
so its own node key and lock files), so "first run" really is the first on that "node".

- 2.3.4, ``ctr run`` of runwasi-flavour images: the second run compiles nothing; 8 simultaneous
  first runs (8 shims) compile once; ``ctr images rm --sync`` takes the artifact with the image;
  a planted artifact the node did not write is recompiled and replaced, never loaded.
- 1.6.20 cannot run images whose module is a layer (see test_ctr_wasm_images.py), so the
  content-store protocol itself (lease, Write, Update, labels, GC following the label) is driven
  there directly through ``compiled_for_layer``, on the layer blob of a tar-flavour image.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import built_fixture
from tests.integration.daemon import CONTAINERD23_MISSING, Containerd, containerd23_bin, containerd_binary
from tests.integration.images import pack_wasm_image

pytestmark = pytest.mark.integration

REF = "containerd.io/gc.ref.content.runwasm."
MAC = "runwasm.io/cwasm-mac."
COMPILED = re.compile(r"layer (sha256:[0-9a-f]{64}): compiled (?:module|component) in")
LOADED = re.compile(r"layer (sha256:[0-9a-f]{64}): compiled artifact \S+ \(key [0-9a-f]+\) loaded from the content store")


@pytest.fixture(scope="module")
def cd23() -> Iterator[tuple[Containerd, Path]]:
    if containerd23_bin() is None:
        pytest.skip(CONTAINERD23_MISSING)
    cache = Path(tempfile.mkdtemp(prefix="rwcas-cache-"))
    with Containerd(namespace=f"rwcas{os.getpid()}", flavour="2.3", env={"RUNWASM_WASM_CACHE": str(cache)}) as d:
        yield d, cache
        d.remove_all_containers()
    subprocess.run(["rm", "-rf", str(cache)], check=False)


def _import(d: Containerd, tmp: Path, module: str, fmt: str, name: str) -> str:
    tar = tmp / f"{name}.tar"
    ref = pack_wasm_image(built_fixture("wasm", f"{module}.wasm"), tar, f"runwasm.test/{name}:1", fmt)
    d.ctr("images", "import", "--all-platforms", str(tar), check=fmt == "tar")
    return ref


def _log(d: Containerd) -> str:
    return d.log_path.read_text(errors="replace")


def _manifest_layer(d: Containerd, ref: str, media_type: str | None = None) -> str:
    """The digest of the first layer (of ``media_type``, if given) of image ``ref``'s manifest."""
    import json

    target = next(ln.split()[2] for ln in d.ctr("images", "ls").stdout.splitlines()[1:] if ln.split()[0] == ref)
    doc = json.loads(d.ctr("content", "get", target).stdout)
    if "manifests" in doc:
        doc = json.loads(d.ctr("content", "get", doc["manifests"][0]["digest"]).stdout)
    layers = [x["digest"] for x in doc["layers"] if media_type is None or x["mediaType"] == media_type]
    return str(layers[0])


def _layer(d: Containerd, ref: str) -> str:
    return _manifest_layer(d, ref, "application/wasm")


def _labels(d: Containerd, digest: str) -> dict[str, str]:
    from runwasm.oci.digest import Digest
    from runwasm.shim.server.containerd_api import ContainerdClient

    with ContainerdClient(d.address, d.namespace) as client:
        return client.info_labels(Digest.parse(digest))


def _artifacts(d: Containerd) -> list[str]:
    """Blobs runwasm wrote as compiled artifacts (carrying its key label)."""
    return [line.split()[0] for line in d.ctr("content", "ls").stdout.splitlines()[1:] if "runwasm.io/cwasm-key=" in line]


def _count(pattern: re.Pattern[str], text: str, layer: str) -> int:
    return sum(1 for m in pattern.finditer(text) if m.group(1) == layer)


def _disk_entries(cache: Path) -> list[Path]:
    """Entries of the on-disk compile cache: a workload that compiled its module stores one there.
    (``wasmtime-cli/`` holds what the wasmtime CLI runs, compiled once per node by the CLI itself:
    ``runwasm.wasm.min_run``; not wasmtime-py's.)"""
    return sorted(p for p in cache.rglob("*.cwasm") if p.parent.name != "wasmtime-cli")


def test_second_run_compiles_nothing(cd23: tuple[Containerd, Path], tmp_path: Path) -> None:
    d, cache = cd23
    ref = _import(d, tmp_path, "hello", "runwasi", "cas-hello")
    layer = _layer(d, ref)
    before = set(_artifacts(d))
    first = d.run(ref, "cas-first")
    assert (first.returncode, first.stdout) == (0, "hello from wasm\n"), first.output
    assert _count(COMPILED, _log(d), layer) == 1
    labels = _labels(d, layer)
    refs = {k: v for k, v in labels.items() if k.startswith(REF)}
    assert len(refs) == 1, labels
    assert len([k for k in labels if k.startswith(MAC)]) == 1, labels
    [artifact] = set(_artifacts(d)) - before
    assert list(refs.values()) == [artifact]

    second = d.run(ref, "cas-second")
    assert (second.returncode, second.stdout) == (0, "hello from wasm\n"), second.output
    log = _log(d)
    assert _count(COMPILED, log, layer) == 1, "the second run compiled again"
    assert _count(LOADED, log, layer) == 1
    assert set(_artifacts(d)) - before == {artifact}
    assert _disk_entries(cache) == [], "a workload compiled the layer itself (on-disk cache entry)"


def test_eight_simultaneous_first_runs_compile_once(cd23: tuple[Containerd, Path], tmp_path: Path) -> None:
    d, cache = cd23
    ref = _import(d, tmp_path, "argsenv", "runwasi", "cas-herd")
    layer = _layer(d, ref)
    before = set(_artifacts(d))

    def run(i: int) -> tuple[int, str]:
        res = d.run(ref, f"cas-herd-{i}", "m.wasm", str(i), timeout=300)
        return res.returncode, res.output

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(8)))
    for i, (rc, out) in enumerate(results):
        assert rc == 0, (i, out)
        assert f"arg: {i}" in out, (i, out)
    log = _log(d)
    assert _count(COMPILED, log, layer) == 1, "more than one shim compiled the layer"
    # every other shim loaded it; each line is in its own pod's log (shim/server/group.py: the
    # fetch's worker thread keeps the group's context; it once went to another pod's FIFO, lost
    # when that pod was deleted first)
    assert _count(LOADED, log, layer) == 7
    assert _disk_entries(cache) == [], "a workload compiled the layer itself (on-disk cache entry)"
    assert len(set(_artifacts(d)) - before) == 1


def test_image_removal_takes_the_artifact(cd23: tuple[Containerd, Path], tmp_path: Path) -> None:
    d, _cache = cd23
    ref = _import(d, tmp_path, "exit7", "runwasi", "cas-gc")
    layer = _layer(d, ref)
    assert d.run(ref, "cas-gc").returncode == 7
    [artifact] = [v for k, v in _labels(d, layer).items() if k.startswith(REF)]
    assert artifact in _artifacts(d)
    d.ctr("images", "rm", "--sync", ref)
    listed = d.ctr("content", "ls").stdout
    assert artifact not in listed
    assert layer not in listed


def test_a_planted_artifact_is_recompiled_not_loaded(cd23: tuple[Containerd, Path], tmp_path: Path) -> None:
    d, _cache = cd23
    ref = _import(d, tmp_path, "hello", "runwasi", "cas-planted")
    layer = _layer(d, ref)
    assert d.run(ref, "cas-planted-1").returncode == 0
    [(ref_key, good)] = [(k, v) for k, v in _labels(d, layer).items() if k.startswith(REF)]
    key = ref_key[len(REF):]
    # a blob no runwasm wrote (it would crash or worse if deserialized), with a MAC made without the key
    junk = tmp_path / "junk.cwasm"
    junk.write_bytes(b"\x7fELF" + os.urandom(4096))
    junk_digest = "sha256:" + hashlib.sha256(junk.read_bytes()).hexdigest()
    subprocess.run(d.ctr_argv("content", "ingest", "planted"), input=junk.read_bytes(), check=True, env=d.env(),
                   capture_output=True)
    d.ctr("content", "label", layer, f"{ref_key}={junk_digest}", f"{MAC}{key}={'0' * 64}")
    res = d.run(ref, "cas-planted-2")
    assert (res.returncode, res.stdout) == (0, "hello from wasm\n"), res.output
    log = _log(d)
    assert re.search(rf"layer {layer}: compiled artifact '{junk_digest}' \(key {key[:16]}\) is unusable, "
                     r"recompiling; it is not loaded: its MAC label", log), log[-3000:]
    assert _count(COMPILED, log, layer) == 2
    now = _labels(d, layer)[ref_key]
    assert now != junk_digest
    assert now == good
    d.ctr("content", "rm", junk_digest, check=False)


# --- the content-store protocol on both daemons, driven directly -------------------------------


@pytest.mark.parametrize("flavour", ["1.6", "2.3"])
def test_content_store_protocol(flavour: str, tmp_path: Path) -> None:
    """compiled_for_layer against a real daemon: publishes once, loads after, refuses a forged MAC,
    and the artifact goes with the image that references the labelled blob (GC)."""
    if flavour == "1.6" and containerd_binary() is None:
        pytest.skip("containerd binary not found on PATH (install Debian's containerd: scripts/install-system.sh)")
    if flavour == "2.3" and containerd23_bin() is None:
        pytest.skip(CONTAINERD23_MISSING)
    from runwasm.oci.digest import Digest
    from runwasm.shim.server.containerd_api import ContainerdClient
    from runwasm.shim.server.image_cache import compiled_for_layer
    from runwasm.wasm.sandbox import Sandbox

    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    module = built_fixture("wasm", "hello.wasm")
    with Containerd(namespace=f"rwcasp{os.getpid()}", flavour=flavour) as d:
        # a tar-flavour image imports on both; its layer blob stands for the Wasm layer
        tar = tmp_path / "img.tar"
        ref = pack_wasm_image(module, tar, "runwasm.test/cas-proto:1", "tar")
        d.ctr("images", "import", "--all-platforms", str(tar))
        layer = Digest.parse(_manifest_layer(d, ref))
        with ContainerdClient(d.address, d.namespace) as client:
            first = compiled_for_layer(client, layer, module, Sandbox(), cache, out)
            assert first is not None
            assert first.source == "compiled"
            assert first.published
            again = compiled_for_layer(client, layer, module, Sandbox(), cache, out)
            assert again is not None
            assert again.source == "content-store"
            assert again.digest == first.digest
            assert again.path.read_bytes() == first.path.read_bytes()
            # another engine configuration is another artifact
            other = compiled_for_layer(client, layer, module, Sandbox(fuel=1000), cache, out)
            assert other is not None
            assert other.source == "compiled"
            assert other.key != first.key
            # a MAC that is not this node's: recompiled, label replaced
            client.update_labels(layer, {MAC + first.key: "f" * 64})
            redo = compiled_for_layer(client, layer, module, Sandbox(), cache, out)
            assert redo is not None
            assert redo.source == "compiled"
            assert compiled_for_layer(client, layer, module, Sandbox(), cache, out).source == "content-store"  # type: ignore[union-attr]
        assert str(first.digest) in d.ctr("content", "ls").stdout
        d.ctr("images", "rm", "--sync", ref)
        listed = d.ctr("content", "ls").stdout
        assert str(first.digest) not in listed, listed
        assert str(other.digest) not in listed, listed

