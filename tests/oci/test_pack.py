from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from runwasm.oci import mediatypes as mt
from runwasm.oci.errors import InvalidArgumentError, NotFoundError
from runwasm.oci.image import ImageConfig, Index, Manifest
from runwasm.oci.pack import pack_wasm
from tests.oci.conftest import HELLO_WASM, Containerd


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        out = {}
        for m in tar.getmembers():
            assert m.mtime == 0
            assert m.uid == 0
            assert m.gid == 0
            f = tar.extractfile(m)
            out[m.name] = f.read() if f else b""
        return out


def test_pack_wasm_writes_a_valid_layout(wasm_module: Path, tmp_path: Path) -> None:
    out = tmp_path / "img.tar"
    packed = pack_wasm(wasm_module, out, "hello", args=["a", "b"], env=["X=1"])
    assert packed.ref == "docker.io/library/hello:latest"
    files = _members(out)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = Index.from_json(files["index.json"])
    (desc,) = index.manifests
    assert desc.annotations == {mt.ANNOTATION_IMAGE_NAME: "docker.io/library/hello:latest",
                                mt.ANNOTATION_REF_NAME: "latest"}
    for name, data in files.items():
        if name.startswith("blobs/sha256/") and data:
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    manifest = Manifest.from_json(files[f"blobs/sha256/{desc.digest.hex}"], desc.digest)
    config = ImageConfig.from_json(files[f"blobs/sha256/{manifest.config.digest.hex}"])
    assert (config.os, config.architecture) == ("wasip1", "wasm")
    assert config.config.entrypoint == ("/hello.wasm",)
    assert config.config.cmd == ("a", "b")
    assert config.config.env == ("X=1",)
    (layer,) = manifest.layers
    assert layer.media_type == mt.OCI_LAYER_TAR_GZIP
    raw = gzip.decompress(files[f"blobs/sha256/{layer.digest.hex}"])
    assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == str(config.diff_ids[0])
    with tarfile.open(fileobj=io.BytesIO(raw)) as layer_tar:
        assert layer_tar.getnames() == ["hello.wasm"]
        f = layer_tar.extractfile("hello.wasm")
        assert f is not None
        assert f.read() == HELLO_WASM


def test_pack_wasm_is_deterministic(wasm_module: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    pack_wasm(wasm_module, a, "registry.example.com:5000/x/hello:v1")
    pack_wasm(wasm_module, b, "registry.example.com:5000/x/hello:v1")
    assert a.read_bytes() == b.read_bytes()


def test_pack_wasm_refuses_non_wasm(tmp_path: Path) -> None:
    bad = tmp_path / "x.wasm"
    bad.write_bytes(b"#!/bin/sh\n")
    with pytest.raises(InvalidArgumentError, match="not a Wasm binary"):
        pack_wasm(bad, tmp_path / "o.tar", "x")
    assert not (tmp_path / "o.tar").exists()


def test_pack_wasm_missing_module(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="module not found"):
        pack_wasm(tmp_path / "nope.wasm", tmp_path / "o.tar", "x")


def test_pack_wasm_bad_env(wasm_module: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="KEY=VALUE"):
        pack_wasm(wasm_module, tmp_path / "o.tar", "x", env=["NOEQUALS"])


@pytest.mark.integration
@pytest.mark.privileged
def test_containerd_imports_and_runs_packed_image(wasm_module: Path, tmp_path: Path,
                                                  containerd: Containerd) -> None:
    out = tmp_path / "img.tar"
    pack_wasm(wasm_module, out, "docker.io/library/hello:latest")
    # ctr 1.6 keeps only host-platform (linux/amd64) manifests unless told otherwise.
    plain = containerd.ctr("images", "import", str(out), check=False)
    assert plain.returncode != 0
    assert "filtered out" in plain.stderr
    containerd.ctr("images", "import", "--all-platforms", str(out))
    listing = containerd.ctr("images", "ls").stdout
    assert "docker.io/library/hello:latest" in listing
    assert "wasip1/wasm" in listing
    # runc cannot exec a .wasm: reaching "exec format error" proves the rootfs was mounted and
    # the container was created with the module at /hello.wasm.
    run = containerd.ctr("run", "--rm", "--runtime", "io.containerd.runc.v2",
                         "docker.io/library/hello:latest", "packtest", check=False)
    assert "exec /hello.wasm: exec format error" in run.stdout + run.stderr


@pytest.mark.integration
@pytest.mark.privileged
def test_import_of_ctr_export(wasm_module: Path, tmp_path: Path, containerd: Containerd) -> None:
    """An image layout written by a real tool (containerd's exporter) imports into runwasm."""
    from runwasm.oci.images import ImageStore
    from runwasm.oci.layout_import import import_layout
    from runwasm.oci.resolve import resolve
    from runwasm.oci.store import ContentStore

    pack_wasm(wasm_module, tmp_path / "img.tar", "docker.io/library/hello:v2")
    containerd.ctr("images", "import", "--all-platforms", str(tmp_path / "img.tar"))
    containerd.ctr("images", "export", "--all-platforms", str(tmp_path / "exported.tar"), "docker.io/library/hello:v2")
    store = ContentStore(tmp_path / "root")
    (record,) = import_layout(store, ImageStore(store.root), tmp_path / "exported.tar")
    assert record.name == "docker.io/library/hello:v2"
    assert resolve(store, record.target).config.config.entrypoint == ("/hello.wasm",)


def _blobs(path: Path) -> tuple[Manifest, dict[str, bytes]]:
    members = _members(path)
    index = Index.from_json(members["index.json"])
    manifest = Manifest.from_json(members["blobs/sha256/" + index.manifests[0].digest.hex])
    return manifest, members


def test_pack_runwasi_format_raw_layer_no_diff_ids(wasm_module: Path, tmp_path: Path) -> None:
    packed = pack_wasm(wasm_module, tmp_path / "r.tar", "hello", fmt="runwasi")
    manifest, members = _blobs(tmp_path / "r.tar")
    (layer,) = manifest.layers
    assert layer.media_type == mt.WASM_MODULE
    assert members["blobs/sha256/" + layer.digest.hex] == HELLO_WASM
    config = ImageConfig.from_json(members["blobs/sha256/" + manifest.config.digest.hex])
    assert (config.os, config.architecture, config.diff_ids) == ("wasip1", "wasm", ())
    assert manifest.config.media_type == mt.OCI_CONFIG
    assert packed.entrypoint == "/hello.wasm"


def test_pack_artifact_format(wasm_module: Path, tmp_path: Path) -> None:
    pack_wasm(wasm_module, tmp_path / "a.tar", "hello", fmt="artifact")
    manifest, members = _blobs(tmp_path / "a.tar")
    assert manifest.artifact_type == mt.WASM_MODULE
    assert manifest.config.media_type == mt.WASM_CONFIG
    config = json.loads(members["blobs/sha256/" + manifest.config.digest.hex])
    assert config["architecture"] == "wasm"
    assert config["layerDigests"] == [str(manifest.layers[0].digest)]
    with pytest.raises(InvalidArgumentError, match="no Cmd/Env"):
        pack_wasm(wasm_module, tmp_path / "b.tar", "hello", fmt="artifact", args=["x"])


def test_pack_component_is_wasip2(tmp_path: Path) -> None:
    from tests.conftest import built_fixture

    pack_wasm(built_fixture("wasm", "component_run_ok.wasm"), tmp_path / "c.tar", "c", fmt="runwasi")
    manifest, members = _blobs(tmp_path / "c.tar")
    assert manifest.layers[0].media_type == mt.WASM_COMPONENT_LAYER
    assert ImageConfig.from_json(members["blobs/sha256/" + manifest.config.digest.hex]).os == "wasip2"


def test_pack_unknown_format(wasm_module: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="unknown format 'oci'"):
        pack_wasm(wasm_module, tmp_path / "o.tar", "x", fmt="oci")
