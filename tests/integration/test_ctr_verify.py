"""containerd 2.3.4's image-verifier bindir plugin running ``runwasm-verify`` at pull time.

A private containerd 2.3.4 (``$RUNWASM_CONTAINERD23_BIN``, default
``../shared/tools/containerd-2.3.4/bin``; see ``tests.integration.daemon``) with ``[plugins."io.containerd.image-verifier.v1.bindir"]``
pointing at a per-session bin dir, and a private ``docker-registry`` on 127.0.0.1. Images are
pushed with skopeo (digests preserved), signed with ``runwasm image sign --push`` and pulled
with ``ctr image pull`` (the transfer service, ctr 2.x's default), then run under runwasm.
"""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.images import busybox_image
from runwasm.oci.verify import cosign
from runwasm.oci.verify.keys import generate_key_pair
from runwasm.oci.verify.registry import Registry
from tests.conftest import built_fixture
from tests.integration.daemon import CONTAINERD23_MISSING, Containerd, CtrResult, containerd23_bin, venv_bin
from tests.integration.images import pack_wasm_image
from tests.registry import LocalRegistry, registry_binary

TIMEOUT_S = 10  # containerd's default; importing sigstore alone took 2.4-3.5 s at load ~12 here


class Containerd2(Containerd):
    """The private 2.3.4 daemon of ``tests.integration.daemon`` plus an image-verifier bin dir."""

    def __init__(self) -> None:
        super().__init__(flavour="2.3")

    def _write_config(self) -> None:
        super()._write_config()
        self.verifier_dir = self.dir / "verifiers"
        self.verifier_dir.mkdir()
        with open(self.config, "a") as f:
            f.write('[plugins."io.containerd.image-verifier.v1.bindir"]\n'
                    f'  bin_dir = "{self.verifier_dir}"\n  max_verifiers = 10\n'
                    f'  per_verifier_timeout = "{TIMEOUT_S}s"\n')

    def set_verifier(self, script: str) -> None:
        """Make ``script`` (a shell script body) the only verifier in the bin dir."""
        for entry in self.verifier_dir.iterdir():
            entry.unlink()
        path = self.verifier_dir / "50-runwasm"
        path.write_text("#!/bin/sh\n" + script)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def pull(self, ref: str, *extra: str) -> CtrResult:
        return self.ctr("image", "pull", "--plain-http", *extra, ref, check=False, timeout=120)

    def has_image(self, ref: str) -> bool:
        return ref in self.ctr("image", "ls", "-q").stdout.split()


@pytest.fixture(scope="module")
def cd2() -> Iterator[Containerd2]:
    if containerd23_bin() is None:
        pytest.skip(CONTAINERD23_MISSING)
    if registry_binary() is None:
        pytest.skip("docker-registry not installed (Debian package docker-registry; scripts/install-system.sh)")
    with Containerd2() as daemon:
        yield daemon
    assert daemon.leftovers() == []


@pytest.fixture(scope="module")
def reg() -> Iterator[LocalRegistry]:
    r = LocalRegistry()
    try:
        r.start()
        yield r
    finally:
        r.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, reg: LocalRegistry) -> dict[str, Path]:
    """Keys, a policy requiring key 'good' for the registry, and images pushed to it."""
    d = tmp_path_factory.mktemp("verifyworld")
    for name in ("good", "other"):
        priv, pub = generate_key_pair("ecdsa-p256")
        (d / f"{name}.key").write_bytes(priv)
        (d / f"{name}.pub").write_bytes(pub)
    policy = d / "policy.toml"
    policy.write_text(f'version = 1\n[keys.good]\npath = "good.pub"\n[[rules]]\nmatch = "{reg.host}/*"\n'
                      'keys = ["good"]\n')
    for name in ("hello", "exit7"):
        tar = d / f"{name}.tar"
        pack_wasm_image(built_fixture("wasm", f"{name}.wasm"), tar, f"{reg.host}/{name}:1")
        reg.push_archive(tar, f"{name}:1")
    bb = busybox_image(d / "busybox.tar", f"{reg.host}/busybox:1")
    reg.push_archive(bb, "busybox:1")
    return {"dir": d, "policy": policy, "good": d / "good.key", "other": d / "other.key"}


def _sign(key: Path, ref: str, *extra: str) -> None:
    res = subprocess.run([str(venv_bin() / "runwasm"), "image", "sign", "--key", str(key), "--push", *extra, ref,
                          "--root", str(key.parent / "store")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def _use_runwasm_verify(cd2: Containerd2, policy: Path) -> None:
    cd2.set_verifier(f'RUNWASM_VERIFY_POLICY="{policy}" exec "{venv_bin() / "runwasm-verify"}" "$@"\n')


@pytest.fixture(autouse=True)
def _forget_images(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "cd2" in request.fixturenames:
        daemon: Containerd2 = request.getfixturevalue("cd2")
        daemon.remove_all_containers()
        for ref in daemon.ctr("image", "ls", "-q", check=False).stdout.split():
            daemon.ctr("image", "rm", ref, check=False)


def test_signed_wasm_image_is_pulled_and_runs(cd2: Containerd2, reg: LocalRegistry, world: dict[str, Path]) -> None:
    ref = f"{reg.host}/hello:1"
    _sign(world["good"], ref)
    _use_runwasm_verify(cd2, world["policy"])
    res = cd2.pull(ref, "--all-platforms")
    assert res.returncode == 0, res.output + cd2.log_tail()
    assert cd2.has_image(ref)
    run = cd2.run(ref, "verify-hello", timeout=120)
    assert run.returncode == 0, run.output + cd2.log_tail()
    assert "hello" in run.stdout.lower()


def test_signed_linux_image_is_pulled_and_runs(cd2: Containerd2, reg: LocalRegistry, world: dict[str, Path]) -> None:
    ref = f"{reg.host}/busybox:1"
    _sign(world["good"], ref)
    _use_runwasm_verify(cd2, world["policy"])
    res = cd2.pull(ref)
    assert res.returncode == 0, res.output + cd2.log_tail()
    run = cd2.run(ref, "verify-bb", "/bin/echo", "signed-linux", timeout=120)
    assert run.returncode == 0, run.output + cd2.log_tail()
    assert "signed-linux" in run.stdout


def test_referrer_signature_and_sigstore_bundle_are_accepted(cd2: Containerd2, reg: LocalRegistry,
                                                            world: dict[str, Path], tmp_path: Path) -> None:
    """OCI 1.1 referrers (fallback tag index on distribution 2.8): a key signature pushed with
    ``sign --referrer``, and a Sigstore bundle verified offline against the policy's trust root."""
    from runwasm.oci.image import Descriptor
    from runwasm.oci.reference import Reference
    from runwasm.oci.verify.sign import push_bundle
    from tests.oci.verify.sigstore_instance import PrivateSigstore

    refs = {}
    for name in ("viaref", "viabundle"):
        tar = tmp_path / f"{name}.tar"
        refs[name] = pack_wasm_image(built_fixture("wasm", "hello.wasm"), tar, f"{reg.host}/{name}:1")
        reg.push_archive(tar, f"{name}:1")
    _sign(world["good"], refs["viaref"], "--referrer")
    sigstore = PrivateSigstore()
    (tmp_path / "trusted_root.json").write_bytes(sigstore.trusted_root())
    client = Registry(reg.host)
    fetched = client.get_manifest("viabundle", "1")
    assert fetched is not None
    subject = Descriptor(fetched.media_type, fetched.digest, len(fetched.data))
    push_bundle(client, Reference.parse(refs["viabundle"]), subject, sigstore.bundle(subject.digest.hex))
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[keys.good]\npath = "{world["dir"] / "good.pub"}"\n'
                      f'[trust_roots.t]\npath = "trusted_root.json"\n'
                      f'[[rules]]\nmatch = "{reg.host}/viaref"\nkeys = ["good"]\n'
                      f'[[rules]]\nmatch = "{reg.host}/viabundle"\n'
                      'identities = [{ trust_root = "t", issuer = "https://issuer.example", subject = "ci@example.com" }]\n')
    _use_runwasm_verify(cd2, policy)
    for name, ref in refs.items():
        res = cd2.pull(ref, "--all-platforms")
        assert res.returncode == 0, name + res.output + cd2.log_tail()
        run = cd2.run(ref, f"verify-{name}", timeout=120)
        assert run.returncode == 0, run.output


def test_unsigned_image_is_refused_with_the_reason(cd2: Containerd2, reg: LocalRegistry,
                                                   world: dict[str, Path]) -> None:
    ref = f"{reg.host}/exit7:1"
    _use_runwasm_verify(cd2, world["policy"])
    res = cd2.pull(ref, "--all-platforms")
    assert res.returncode != 0
    assert "blocked pull" in res.output, res.output
    assert "not signed" in res.output, res.output
    assert ref in res.output
    assert not cd2.has_image(ref)


def test_signature_by_another_key_is_refused(cd2: Containerd2, reg: LocalRegistry, world: dict[str, Path],
                                             tmp_path: Path) -> None:
    tar = tmp_path / "x.tar"
    ref = pack_wasm_image(built_fixture("wasm", "exit_arg.wasm"), tar, f"{reg.host}/otherkey:1")
    reg.push_archive(tar, "otherkey:1")
    _sign(world["other"], ref)
    _use_runwasm_verify(cd2, world["policy"])
    res = cd2.pull(ref, "--all-platforms")
    assert res.returncode != 0
    assert "does not verify with key(s) ['good']" in res.output, res.output
    assert not cd2.has_image(ref)


def test_tampered_manifest_is_refused(cd2: Containerd2, reg: LocalRegistry, world: dict[str, Path],
                                      tmp_path: Path) -> None:
    """The tag is moved to other content and the old signature copied to the new digest's tag."""
    ref = f"{reg.host}/tamper:1"
    good, evil = tmp_path / "good.tar", tmp_path / "evil.tar"
    pack_wasm_image(built_fixture("wasm", "hello.wasm"), good, ref)
    reg.push_archive(good, "tamper:1")
    _sign(world["good"], ref)
    client = Registry(reg.host)
    old = client.get_manifest("tamper", "1")
    assert old is not None
    pack_wasm_image(built_fixture("wasm", "exit7.wasm"), evil, ref)
    reg.push_archive(evil, "tamper:1")
    new = client.get_manifest("tamper", "1")
    assert new is not None
    assert new.digest != old.digest
    sig = client.get_manifest("tamper", cosign.sig_tag(old.digest))
    assert sig is not None
    client.push_manifest("tamper", cosign.sig_tag(new.digest), sig.data, sig.media_type)
    _use_runwasm_verify(cd2, world["policy"])
    res = cd2.pull(ref, "--all-platforms")
    assert res.returncode != 0
    assert f"payload signs digest '{old.digest}', not this image's '{new.digest}'" in res.output, res.output
    assert not cd2.has_image(ref)


def test_verifier_that_cannot_judge_fails_closed(cd2: Containerd2, reg: LocalRegistry, world: dict[str, Path]) -> None:
    """runwasm-verify without a readable policy exits 2: refused, and the reason says why."""
    ref = f"{reg.host}/hello:1"
    _sign(world["good"], ref)
    _use_runwasm_verify(cd2, world["dir"] / "missing-policy.toml")
    res = cd2.pull(ref, "--all-platforms")
    assert res.returncode != 0
    assert "exit code 2" in res.output, res.output
    assert "failed to read policy" in res.output, res.output
    assert not cd2.has_image(ref)


def test_verifier_killed_by_a_signal_fails_closed(cd2: Containerd2, reg: LocalRegistry, world: dict[str, Path]) -> None:
    ref = f"{reg.host}/hello:1"
    _sign(world["good"], ref)
    cd2.set_verifier("kill -SEGV $$\n")
    res = cd2.pull(ref, "--all-platforms")
    assert res.returncode != 0
    assert "returned error" in res.output, res.output
    assert "signal: segmentation fault" in res.output, res.output
    assert not cd2.has_image(ref)


def test_verifier_timeout_fails_closed(cd2: Containerd2, reg: LocalRegistry, world: dict[str, Path]) -> None:
    ref = f"{reg.host}/hello:1"
    _sign(world["good"], ref)
    cd2.set_verifier(f"exec sleep {TIMEOUT_S * 6}\n")
    res = cd2.pull(ref, "--all-platforms")
    assert res.returncode != 0
    assert "returned error" in res.output, res.output
    assert "signal: killed" in res.output, res.output
    assert not cd2.has_image(ref)


def test_empty_verifier_dir_lets_pulls_through(cd2: Containerd2, reg: LocalRegistry) -> None:
    """containerd's documented fail-open case: no verifier in bin_dir means no verification."""
    for entry in cd2.verifier_dir.iterdir():
        entry.unlink()
    ref = f"{reg.host}/exit7:1"
    res = cd2.pull(ref, "--all-platforms")
    assert res.returncode == 0, res.output
    assert cd2.has_image(ref)


def test_local_pull_bypasses_verifiers(cd2: Containerd2, reg: LocalRegistry, world: dict[str, Path]) -> None:
    """containerd fails open here: ``ctr image pull --local`` uses the client-side pull, not the
    transfer service, so no image verifier runs (documented in README/design.md)."""
    ref = f"{reg.host}/exit7:1"
    _use_runwasm_verify(cd2, world["policy"])
    assert cd2.pull(ref, "--all-platforms").returncode != 0
    res = cd2.pull(ref, "--all-platforms", "--local")
    assert res.returncode == 0, res.output
    assert cd2.has_image(ref)
