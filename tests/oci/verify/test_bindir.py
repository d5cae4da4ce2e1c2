"""``runwasm-verify`` run as containerd runs it (argv, descriptor on stdin, exit status, stdout),
against a private docker-registry, with signatures in both the ``.sig`` tag and referrer forms."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runwasm.oci.reference import Reference
from runwasm.oci.verify import cosign
from runwasm.oci.verify.keys import load_private_key
from runwasm.oci.verify.registry import Fetched, Registry
from runwasm.oci.verify.sign import push, sign_layer
from runwasm.oci.verify.sources import RegistrySource
from tests.conftest import built_fixture
from tests.integration.images import pack_wasm_image
from tests.oci.verify.conftest import PolicyWriter
from tests.registry import LocalRegistry

VERIFY = Path(sys.executable).parent / "runwasm-verify"


def _push(registry: LocalRegistry, tmp_path: Path, module: str, repo_tag: str) -> tuple[str, Registry, Fetched]:
    tar = tmp_path / f"{repo_tag.replace(':', '_').replace('/', '_')}.tar"
    ref = pack_wasm_image(built_fixture("wasm", f"{module}.wasm"), tar, f"{registry.host}/{repo_tag}")
    registry.push_archive(tar, repo_tag)
    client = Registry(registry.host)
    repo, _, tag = repo_tag.partition(":")
    fetched = client.get_manifest(repo, tag)
    assert fetched is not None
    return ref, client, fetched


def _call(name: str, digest: str, policy: Path, stdin: bytes | None = None,
          extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 1}
    data = (json.dumps(desc) + "\n").encode() if stdin is None else stdin
    return subprocess.run([str(VERIFY), "-name", name, "-digest", digest, "-stdin-media-type",
                           "application/vnd.oci.descriptor.v1+json", *extra], input=data.decode(),
                          capture_output=True, text=True, timeout=60,
                          env={"RUNWASM_VERIFY_POLICY": str(policy), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("referrer", [False, True], ids=["sig-tag", "referrer"])
def test_accepts_signed_refuses_others(registry: LocalRegistry, tmp_path: Path, keys: dict[str, tuple[Path, Path]],
                                       write_policy: PolicyWriter, referrer: bool) -> None:
    form = "ref" if referrer else "tag"
    ref, client, fetched = _push(registry, tmp_path, "hello", f"bindir-{form}:1")
    from runwasm.oci.image import Descriptor

    subject = Descriptor(fetched.media_type, fetched.digest, len(fetched.data))
    layer = sign_layer(load_private_key(keys["ed1"][0]), Reference.parse(ref), subject.digest)
    push(client, Reference.parse(ref), subject, layer, referrer=referrer)
    policy = write_policy(f"{registry.host}/*", ("ec1", "ed1"))
    found = RegistrySource().find(Reference.parse(ref), subject.digest)
    assert len(found.candidates) == 1
    assert ("referrer" in found.candidates[0].source) is referrer
    res = _call(ref, str(subject.digest), policy)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "accepted: signed by key 'ed1'" in res.stdout
    # the same image under a policy that trusts only ec2
    res = _call(ref, str(subject.digest), write_policy(f"{registry.host}/*", ("ec2",)))
    assert res.returncode == 1
    assert "does not verify with key(s) ['ec2']" in res.stdout
    assert str(subject.digest) in res.stdout


def test_unsigned_and_bad_input(registry: LocalRegistry, tmp_path: Path, write_policy: PolicyWriter) -> None:
    ref, _, fetched = _push(registry, tmp_path, "exit7", "bindir-unsigned:1")
    digest = str(fetched.digest)
    policy = write_policy(f"{registry.host}/*")
    res = _call(ref, digest, policy)
    assert res.returncode == 1
    assert "not signed" in res.stdout
    res = _call(ref, digest, write_policy(f"{registry.host}/*", unsigned="warn"))
    assert res.returncode == 0
    assert "WARNING" in res.stdout
    # the descriptor on stdin must be the digest named on the command line
    other = {"mediaType": "x", "digest": "sha256:" + "0" * 64, "size": 1}
    res = _call(ref, digest, policy, stdin=json.dumps(other).encode())
    assert res.returncode == 2
    assert "but the descriptor on stdin has" in res.stdout
    res = subprocess.run([str(VERIFY), "-name", ref], capture_output=True, text=True, input="")
    assert res.returncode == 2
    assert "bad invocation" in res.stdout
    res = _call(ref, digest, policy, extra=("-stdin-media-type", "text/plain"))
    assert res.returncode == 2
    assert "unknown -stdin-media-type 'text/plain'" in res.stdout


def test_unreachable_registry_fails_closed(tmp_path: Path, write_policy: PolicyWriter) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{s.getsockname()[1]}"
        res = _call(f"{host}/app:1", "sha256:" + "1" * 64, write_policy(f"{host}/*"))
    assert res.returncode == 1
    assert "cannot look up signatures" in res.stdout


def test_tag_scheme_signatures_accumulate(registry: LocalRegistry, tmp_path: Path,
                                          keys: dict[str, tuple[Path, Path]]) -> None:
    """Signatures by two keys both stay in the ``.sig`` image; re-signing with a key replaces its own."""
    ref, client, fetched = _push(registry, tmp_path, "hello", "bindir-two:1")
    from runwasm.oci.image import Descriptor

    subject = Descriptor(fetched.media_type, fetched.digest, len(fetched.data))
    for k in ("ec1", "ec2", "ec2"):
        key = load_private_key(keys[k][0])
        push(client, Reference.parse(ref), subject, sign_layer(key, Reference.parse(ref), subject.digest),
             signer=key.public)
    sig = client.get_manifest("bindir-two", cosign.sig_tag(subject.digest))
    assert sig is not None
    assert len(json.loads(sig.data)["layers"]) == 2


def test_layout_signature_pushed_by_skopeo(registry: LocalRegistry, tmp_path: Path,
                                           keys: dict[str, tuple[Path, Path]], write_policy: PolicyWriter) -> None:
    """``image sign --output-layout`` into the image's own layout, then skopeo (a third-party
    tool) pushes the ``.sig`` image: the registry copy verifies."""
    import tarfile

    tar = tmp_path / "img.tar"
    ref = pack_wasm_image(built_fixture("wasm", "hello.wasm"), tar, f"{registry.host}/skopeo-sig:1")
    registry.push_archive(tar, "skopeo-sig:1")
    layout = tmp_path / "layout"
    with tarfile.open(tar) as t:
        t.extractall(layout, filter="data")
    res = subprocess.run([str(VERIFY.parent / "runwasm"), "image", "sign", "--key", str(keys["ec1"][0]),
                          "--output-layout", str(layout), "--root", str(tmp_path / "store"), ref],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    fetched = Registry(registry.host).get_manifest("skopeo-sig", "1")
    assert fetched is not None
    tag = cosign.sig_tag(fetched.digest)
    subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
                    f"oci:{layout}:{tag}", f"docker://{registry.host}/skopeo-sig:{tag}"],
                   check=True, capture_output=True, timeout=120)
    res = _call(ref, str(fetched.digest), write_policy(f"{registry.host}/*"))
    assert res.returncode == 0, res.stdout + res.stderr
