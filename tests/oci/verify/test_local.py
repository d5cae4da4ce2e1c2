"""``runwasm image import --verify``, ``image sign`` into the store / an OCI layout, ``image verify``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from runwasm.oci.digest import Digest
from runwasm.oci.images import ImageStore
from runwasm.oci.store import ContentStore
from runwasm.oci.verify import cosign
from tests.conftest import built_fixture
from tests.oci.verify.conftest import PolicyWriter

RUNWASM = str(Path(sys.executable).parent / "runwasm")


def _rw(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RUNWASM_ROOT=str(root))
    return subprocess.run([RUNWASM, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def _packed(tmp_path: Path, module: str, ref: str) -> tuple[Path, str]:
    tar = tmp_path / f"{module}.tar"
    res = _rw(tmp_path / "unused", "image", "pack-wasm", str(built_fixture("wasm", f"{module}.wasm")),
              "-o", str(tar), "--name", ref)
    assert res.returncode == 0, res.stderr
    return tar, json.loads(res.stdout)["manifest"]


def _signed_tarball(tmp_path: Path, key: Path, module: str = "hello", ref: str = "reg.example/app:1") -> tuple[Path, str]:
    """pack-wasm's layout plus a ``.sig`` image written by ``image sign --output-layout`` (the
    image to sign is found in the layout by name)."""
    tar, digest = _packed(tmp_path, module, ref)
    layout = tmp_path / "layout"
    with tarfile.open(tar) as t:
        t.extractall(layout, filter="data")
    res = _rw(tmp_path / "unused", "image", "sign", "--key", str(key), "--output-layout", str(layout), ref)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "signed.tar"
    with tarfile.open(out, "w") as t:
        for p in sorted(layout.iterdir()):
            t.add(p, p.name)
    return out, digest


def test_import_verify_accepts_signed_tarball(tmp_path: Path, keys: dict[str, tuple[Path, Path]],
                                              write_policy: PolicyWriter) -> None:
    tar, digest = _signed_tarball(tmp_path, keys["ec1"][0])
    root = tmp_path / "store"
    res = _rw(root, "image", "import", "--verify", str(write_policy("reg.example/*")), str(tar))
    assert res.returncode == 0, res.stderr
    assert "accepted: signed by key 'ec1'" in res.stderr
    names = {r.name for r in ImageStore(root).list()}
    assert names == {"reg.example/app:1", f"reg.example/app:{cosign.sig_tag(Digest.parse(digest))}"}
    res = _rw(root, "image", "verify", "--policy", str(write_policy("reg.example/*")), "reg.example/app:1")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("case", ["unsigned", "other-key"])
def test_import_verify_refuses_and_writes_nothing(tmp_path: Path, keys: dict[str, tuple[Path, Path]],
                                                  write_policy: PolicyWriter, case: str) -> None:
    if case == "unsigned":
        tar, digest = _packed(tmp_path, "hello", "reg.example/app:1")
        expect = "not signed"
    else:
        tar, digest = _signed_tarball(tmp_path, keys["ec2"][0])
        expect = "does not verify with key(s) ['ec1']"
    root = tmp_path / "store"
    res = _rw(root, "image", "import", "--verify", str(write_policy("reg.example/*")), str(tar))
    assert res.returncode == 1
    assert expect in res.stderr
    assert "'reg.example/app:1'" in res.stderr
    assert digest in res.stderr
    assert ImageStore(root).list() == []
    assert ContentStore(root).list() == []  # the blobs this import added are gone again


def test_store_default_policy_applies_to_import(tmp_path: Path, write_policy: PolicyWriter) -> None:
    tar, _ = _packed(tmp_path, "hello", "reg.example/app:1")
    root = tmp_path / "store"
    root.mkdir()
    (root / "verify-policy.toml").write_text(write_policy("reg.example/*").read_text())
    res = _rw(root, "image", "import", str(tar))
    assert res.returncode == 1
    assert "not signed" in res.stderr


def test_sign_in_store_then_verify(tmp_path: Path, keys: dict[str, tuple[Path, Path]],
                                   write_policy: PolicyWriter) -> None:
    tar, _ = _packed(tmp_path, "hello", "reg.example/app:1")
    root = tmp_path / "store"
    assert _rw(root, "image", "import", str(tar)).returncode == 0
    policy = write_policy("reg.example/*", ("ed1",))
    assert _rw(root, "image", "verify", "--policy", str(policy), "reg.example/app:1").returncode == 1
    res = _rw(root, "image", "sign", "--key", str(keys["ed1"][0]), "reg.example/app:1")
    assert res.returncode == 0, res.stderr
    res = _rw(root, "image", "verify", "--policy", str(policy), "reg.example/app:1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "signed by key 'ed1' (ed25519" in res.stdout
    # gc keeps the signature image: it is a named record like any other
    assert _rw(root, "image", "gc").returncode == 0
    assert _rw(root, "image", "verify", "--policy", str(policy), "reg.example/app:1").returncode == 0


def test_sign_needs_an_image(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    res = _rw(tmp_path / "store", "image", "sign", "--key", str(keys["ec1"][0]), "reg.example/none:1")
    assert res.returncode == 1
    assert "not in the store" in res.stderr


def test_keygen(tmp_path: Path) -> None:
    res = _rw(tmp_path, "image", "keygen", "--type", "ed25519", str(tmp_path / "k"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    assert b"PUBLIC KEY" in (tmp_path / "k.pub").read_bytes()


def test_unreadable_signature_record_is_refused(tmp_path: Path, keys: dict[str, tuple[Path, Path]],
                                                write_policy: PolicyWriter) -> None:
    """A signature record whose manifest is not a manifest is reported, and the image refused."""
    from runwasm.oci import mediatypes as mt
    from runwasm.oci.image import Descriptor
    from runwasm.oci.images import ImageRecord

    tar, digest = _packed(tmp_path, "hello", "reg.example/app:1")
    root = tmp_path / "store"
    assert _rw(root, "image", "import", str(tar)).returncode == 0
    junk = ContentStore(root).put_bytes(b"not json")
    ImageStore(root).put(ImageRecord(f"reg.example/app:{cosign.sig_tag(Digest.parse(digest))}",
                                     Descriptor(mt.OCI_MANIFEST, junk, 8)))
    res = _rw(root, "image", "verify", "--policy", str(write_policy("reg.example/*")), "reg.example/app:1")
    assert res.returncode == 1
    assert "unreadable signature image" in res.stdout


def test_ls_and_rm_know_signature_records(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    tar, digest = _packed(tmp_path, "hello", "reg.example/app:1")
    root = tmp_path / "store"
    assert _rw(root, "image", "import", str(tar)).returncode == 0
    assert _rw(root, "image", "sign", "--key", str(keys["ec1"][0]), "reg.example/app:1").returncode == 0
    sig_name = f"reg.example/app:{cosign.sig_tag(Digest.parse(digest))}"
    ls = _rw(root, "image", "ls").stdout
    assert f"{sig_name}\t" in ls
    assert "\tsignature\t" in ls
    assert "?" not in ls
    res = _rw(root, "image", "rm", "reg.example/app:1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["reg.example/app:1", sig_name]
    assert ImageStore(root).list() == []
    assert ContentStore(root).list() == []
