from __future__ import annotations

import json

import pytest

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.errors import InvalidArgumentError
from runwasm.oci.image import Descriptor, ImageConfig, Index, Manifest, Platform

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def _manifest(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": mt.OCI_LAYER_TAR_GZIP, "digest": D2, "size": 20,
                    "annotations": {"k": "v"}}],
    }
    doc.update(over)
    return doc


def test_manifest_round_trip() -> None:
    m = Manifest.from_json(json.dumps(_manifest()).encode())
    assert m.config.digest == Digest.parse(D1)
    assert m.layers[0].annotations == {"k": "v"}
    assert Manifest.from_json(m.to_json()) == m


@pytest.mark.parametrize(("doc", "needle"), [
    (_manifest(layers=[{"mediaType": "x", "size": 1}]), "layers[0].digest: missing"),
    (_manifest(layers=[{"mediaType": "x", "size": "1", "digest": D1}]), "layers[0].size: expected integer, got string"),
    (_manifest(layers=[{"mediaType": "x", "size": -1, "digest": D1}]), "layers[0].size: expected size >= 0"),
    (_manifest(config=None), "config: missing"),
    (_manifest(schemaVersion=1), "schemaVersion: expected 2, got 1"),
    (_manifest(mediaType=mt.OCI_INDEX), "mediaType: expected a manifest type"),
    (_manifest(layers=[{"mediaType": "x", "size": 1, "digest": "sha256:xyz"}]), "layers[0].digest: failed to parse digest"),
])
def test_manifest_errors_name_path_and_digest(doc: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Manifest.from_json(json.dumps(doc).encode(), D2)
    msg = str(info.value)
    assert needle in msg
    assert msg.startswith(f"failed to parse image manifest {D2!r}: ")


def test_invalid_json_and_non_object() -> None:
    with pytest.raises(InvalidArgumentError, match=r"\$: invalid JSON"):
        Index.from_json(b"{")
    with pytest.raises(InvalidArgumentError, match=r"\$: expected object, got array"):
        Index.from_json(b"[]")


def test_docker_manifest_list_parses_as_index() -> None:
    doc = {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": [
        {"mediaType": mt.DOCKER_MANIFEST, "digest": D1, "size": 5,
         "platform": {"architecture": "amd64", "os": "linux", "os.features": ["erofs"]}}]}
    index = Index.from_json(doc)
    plat = index.manifests[0].platform
    assert plat == Platform("linux", "amd64", os_features=("erofs",))
    assert index.manifests[0].to_json()["platform"] == {"architecture": "amd64", "os": "linux",
                                                       "os.features": ["erofs"]}


def test_image_config() -> None:
    doc = {"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "x"],
           "Env": ["PATH=/bin"], "WorkingDir": "/w"}, "rootfs": {"type": "layers", "diff_ids": [D1]}}
    cfg = ImageConfig.from_json(doc, D2)
    assert cfg.config.argv == ("/bin/sh", "-c", "x")
    assert cfg.diff_ids == (Digest.parse(D1),)
    assert ImageConfig.from_json(cfg.to_json()) == cfg
    bad = dict(doc, rootfs={"type": "layers", "diff_ids": [7]})
    with pytest.raises(InvalidArgumentError, match=r"rootfs.diff_ids\[0\]: expected string"):
        ImageConfig.from_json(bad)
    with pytest.raises(InvalidArgumentError, match=r"config.Env\[0\]: expected string"):
        ImageConfig.from_json(dict(doc, config={"Env": [1]}))
    with pytest.raises(InvalidArgumentError, match="os: missing"):
        ImageConfig.from_json({"architecture": "amd64"})


def test_platform_parse() -> None:
    assert Platform.parse("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert str(Platform.parse("wasip1/wasm")) == "wasip1/wasm"
    with pytest.raises(InvalidArgumentError):
        Platform.parse("linux")


def test_descriptor_to_json_minimal() -> None:
    d = Descriptor(mt.OCI_CONFIG, Digest.parse(D1), 3)
    assert d.to_json() == {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 3}


def test_image_does_not_import_zstandard() -> None:
    import subprocess
    import sys
    code = "import sys, runwasm.oci.image, runwasm.oci.pack; assert 'zstandard' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
