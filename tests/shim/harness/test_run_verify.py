"""``runwasm run --verify POLICY IMAGE`` (the harness path): signed images run, others do not.

Wasm (pack-wasm and runwasi-style ``application/wasm`` layer) and Linux (busybox) images are
signed in the store with ``runwasm image sign``; the same refusals as the containerd verifier:
unsigned, another key, a tampered record (tag moved, signature copied), an unreadable policy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.images import busybox_image
from fixtures.oci.imagebuild import Layer, write_image
from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.image import Platform
from runwasm.oci.images import ImageRecord, ImageStore
from runwasm.oci.verify import cosign
from runwasm.oci.verify.keys import generate_key_pair
from tests.conftest import built_fixture

RUNWASM = str(Path(sys.executable).parent / "runwasm")
pytestmark = pytest.mark.privileged


def _rw(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RUNWASM_ROOT=str(root))
    return subprocess.run([RUNWASM, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    for name in ("good", "other"):
        priv, pub = generate_key_pair("ecdsa-p256" if name == "good" else "ed25519")
        (tmp_path / f"{name}.key").write_bytes(priv)
        (tmp_path / f"{name}.pub").write_bytes(pub)
    policy = tmp_path / "policy.toml"
    policy.write_text('[keys.good]\npath = "good.pub"\n[[rules]]\nmatch = "t.example/*"\nkeys = ["good"]\n')
    root = tmp_path / "store"
    for module, ref in (("hello", "t.example/hello:1"), ("exit7", "t.example/exit7:1")):
        tar = tmp_path / f"{module}.tar"
        assert _rw(root, "image", "pack-wasm", str(built_fixture("wasm", f"{module}.wasm")), "-o", str(tar),
                   "--name", ref).returncode == 0
        assert _rw(root, "image", "import", str(tar)).returncode == 0
    return {"root": root, "policy": policy, "good": tmp_path / "good.key", "other": tmp_path / "other.key",
            "dir": tmp_path}


def _sign(w: dict[str, Path], key: str, ref: str) -> None:
    res = _rw(w["root"], "image", "sign", "--key", str(w[key]), ref)
    assert res.returncode == 0, res.stderr


def _no_mounts_under(root: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return not any(str(root) in line for line in f)


def test_signed_wasm_image_runs(world: dict[str, Path]) -> None:
    _sign(world, "good", "t.example/hello:1")
    res = _rw(world["root"], "run", "--verify", str(world["policy"]), "t.example/hello:1")
    assert (res.returncode, res.stdout) == (0, "hello from wasm\n"), res.stderr


def test_signed_wasm_artifact_and_linux_images_run(world: dict[str, Path]) -> None:
    root = world["root"]
    module = built_fixture("wasm", "exit7.wasm").read_bytes()
    art = world["dir"] / "art.tar"
    write_image(art, [Layer(mt.WASM_MODULE, module, Digest.of_bytes(module))], name="t.example/art:1",
                platform=Platform(os="wasip1", architecture="wasm"), argv=("/app.wasm",))
    bb = busybox_image(world["dir"] / "bb.tar", "t.example/busybox:1")
    for tar in (art, bb):
        assert _rw(root, "image", "import", str(tar)).returncode == 0
    for ref in ("t.example/art:1", "t.example/busybox:1"):
        assert "not signed" in _rw(root, "run", "--verify", str(world["policy"]), ref).stderr
        _sign(world, "good", ref)
    assert _rw(root, "run", "--verify", str(world["policy"]), "t.example/art:1").returncode == 7
    res = _rw(root, "run", "--verify", str(world["policy"]), "t.example/busybox:1", "--", "/bin/echo", "ok")
    assert (res.returncode, res.stdout) == (0, "ok\n"), res.stderr
    assert _no_mounts_under(root)


@pytest.mark.parametrize("case", ["unsigned", "other-key", "tampered", "no-policy"])
def test_refused_images_do_not_run(world: dict[str, Path], case: str) -> None:
    root, policy, ref = world["root"], world["policy"], "t.example/hello:1"
    expect = {"unsigned": "not signed", "other-key": "does not verify with key(s) ['good']",
              "tampered": "payload signs digest", "no-policy": "failed to read policy"}[case]
    if case == "other-key":
        _sign(world, "other", ref)
    elif case == "tampered":  # the name now points at exit7's manifest, with hello's signature copied
        _sign(world, "good", ref)
        images = ImageStore(root)
        old, evil = images.get(ref).target, images.get("t.example/exit7:1").target
        images.put(ImageRecord(ref, evil))
        sig = images.get(f"t.example/hello:{cosign.sig_tag(old.digest)}")
        images.put(ImageRecord(f"t.example/hello:{cosign.sig_tag(evil.digest)}", sig.target))
    elif case == "no-policy":
        _sign(world, "good", ref)
        policy = world["dir"] / "missing.toml"
    res = _rw(root, "run", "--verify", str(policy), ref)
    assert res.returncode == 125
    assert expect in res.stderr
    assert res.stdout == ""
    assert _no_mounts_under(root)


def test_store_default_policy_applies_to_run(world: dict[str, Path]) -> None:
    shutil.copy(world["policy"], world["root"] / "verify-policy.toml")
    (world["root"] / "good.pub").write_bytes((world["dir"] / "good.pub").read_bytes())
    res = _rw(world["root"], "run", "t.example/hello:1")
    assert res.returncode == 125
    assert "not signed" in res.stderr
    _sign(world, "good", "t.example/hello:1")
    assert _rw(world["root"], "run", "t.example/hello:1").returncode == 0


def test_verify_refuses_non_image_targets(world: dict[str, Path]) -> None:
    res = _rw(world["root"], "run", "--verify", str(world["policy"]), str(built_fixture("wasm", "hello.wasm")))
    assert res.returncode == 2
    assert "--verify applies to images" in res.stderr
