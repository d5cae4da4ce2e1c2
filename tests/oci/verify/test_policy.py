"""Policy parsing: every field, defaults, and refusals that name the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest

from runwasm.oci.reference import Reference
from runwasm.oci.verify.errors import PolicyError
from runwasm.oci.verify.policy import load_policy, parse_policy


def _pub(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    (tmp_path / "k.pub").write_bytes(keys["ec1"][1].read_bytes())


FULL = """
version = 1
default = "accept"
[keys.k]
path = "k.pub"
[trust_roots.corp]
path = "root.json"
[[rules]]
match = "reg.example:5000/wasm/*"
keys = ["k"]
unsigned = "warn"
identities = [{ trust_root = "corp", issuer = "https://issuer.example", subject = "ci@example.com" }]
[[rules]]
match = "reg.example:5000/*"
action = "reject"
[[rules]]
match = "docker.io/library/*"
action = "accept"
[registries."127.0.0.1:5000"]
plain_http = true
"""


def test_full_policy(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    _pub(tmp_path, keys)
    (tmp_path / "root.json").write_text("{}")
    (tmp_path / "p.toml").write_text(FULL)
    p = load_policy(tmp_path / "p.toml")
    assert p.default == "accept"
    assert p.keys["k"].algorithm == "ecdsa-p256"
    assert p.trust_roots["corp"] == tmp_path / "root.json"
    r0 = p.rule_for(Reference.parse("reg.example:5000/wasm/app:1"))
    assert r0 is not None
    assert (r0.keys, r0.unsigned, r0.action) == (("k",), "warn", "verify")
    assert r0.identities[0].subject == "ci@example.com"
    r1 = p.rule_for(Reference.parse("reg.example:5000/linux/app@sha256:" + "a" * 64))
    assert r1 is not None
    assert r1.action == "reject"
    r2 = p.rule_for(Reference.parse("busybox"))
    assert r2 is not None
    assert r2.action == "accept"
    assert p.rule_for(Reference.parse("quay.io/x/y:1")) is None
    assert p.registry("127.0.0.1:5000").plain_http is True
    assert p.registry("other:1").plain_http is None


def test_defaults(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    _pub(tmp_path, keys)
    p = parse_policy('[keys.k]\npath = "k.pub"\n[[rules]]\nmatch = "*"\nkeys = ["k"]\n', "p", tmp_path)
    assert p.default == "reject"
    assert p.rules[0].unsigned == "reject"
    assert p.rules[0].action == "verify"


@pytest.mark.parametrize(("text", "message"), [
    ('bogus = 1\n', "unknown key(s) ['bogus']"),
    ('version = 2\n', "version: 2 is not supported"),
    ('default = "maybe"\n', "default: 'maybe' is not one of ['reject', 'accept']"),
    ('[[rules]]\nmatch = "*"\n', "rules[0]: action 'verify' needs 'keys' or 'identities'"),
    ('[[rules]]\nmatch = "*"\nkeys = ["nope"]\n', "rules[0].keys: unknown key 'nope'"),
    ('[[rules]]\nmatch = "*"\naction = "allow"\n', "rules[0].action: 'allow' is not one of"),
    ('[[rules]]\nmatch = "*"\naction = "accept"\nunsigned = "ignore"\n', "rules[0].unsigned: 'ignore'"),
    ('[[rules]]\nmatch = "*"\naction = "accept"\nkey = "x"\n', "rules[0]: unknown key(s) ['key']"),
    ('[[rules]]\naction = "accept"\n', "rules[0]: missing key(s) ['match']"),
    ('[keys.a]\npath = "missing.pub"\n', "failed to load public key 'a'"),
    ('[trust_roots.t]\npath = "missing.json"\n', "trust_roots.t.path"),
    ('[[rules]]\nmatch = "*"\nidentities = [{ trust_root = "t", issuer = "i", subject = "s" }]\n',
     "unknown trust root 't'"),
    ('[registries."h"]\nplain_http = "yes"\n', "registries.h.plain_http: expected a boolean"),
    ('rules = "x"\n', "rules: expected an array"),
    ('this is not toml', "failed to parse policy 'p.toml'"),
])
def test_refusals_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.toml", tmp_path)
    assert message in str(info.value)
    assert "p.toml" in str(info.value)


def test_unsupported_key_type_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "p384.pub").write_bytes(pem)
    with pytest.raises(PolicyError, match="curve 'secp384r1', expected P-256"):
        parse_policy('[keys.a]\npath = "p384.pub"\n', "p.toml", tmp_path)


def test_unreadable_policy(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="failed to read policy"):
        load_policy(tmp_path / "none.toml")
