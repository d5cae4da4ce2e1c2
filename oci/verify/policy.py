"""The verification policy: a TOML file parsed into frozen dataclasses.

Example (paths are relative to the policy file)::

    version = 1
    default = "reject"            # images no rule matches: "reject" (default) or "accept"

    [keys.release]                # a named public key (PEM, ECDSA P-256 or Ed25519)
    path = "release.pub"

    [trust_roots.corp]            # a Sigstore trusted_root.json, used offline
    path = "trusted_root.json"

    [[rules]]                     # first rule whose pattern matches the reference wins
    match = "registry.example:5000/wasm/*"   # fnmatch glob on "domain/path" (no tag/digest)
    action = "verify"             # "verify" (default), "accept" (no check), "reject"
    keys = ["release"]            # a signature by any one of these keys is enough
    unsigned = "reject"           # no signature at all: "reject" (default) or "warn" (accept, say so)
    identities = [{ trust_root = "corp", issuer = "https://issuer.example", subject = "ci@example" }]

    [registries."127.0.0.1:5000"] # how runwasm-verify reaches a registry
    plain_http = true             # default: HTTPS, falling back to HTTP for loopback hosts only
    ca_file = "/etc/ssl/registry-ca.pem"

A bad signature is always refused, even with ``unsigned = "warn"``. Unknown keys anywhere are
refused with their name, so a typo never weakens a policy silently.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runwasm.oci.reference import Reference
from runwasm.oci.verify.errors import PolicyError
from runwasm.oci.verify.keys import PublicKey, load_public_key

ACTIONS = ("verify", "accept", "reject")
UNSIGNED = ("reject", "warn")
DEFAULT_POLICY_PATH = "/etc/runwasm/verify-policy.toml"


@dataclass(frozen=True, slots=True)
class Identity:
    """A keyless signer: a certificate from ``trust_root``'s CA for ``subject`` via ``issuer``."""

    trust_root: str
    issuer: str
    subject: str


@dataclass(frozen=True, slots=True)
class Rule:
    match: str
    action: str = "verify"
    keys: tuple[str, ...] = ()
    identities: tuple[Identity, ...] = ()
    unsigned: str = "reject"

    def matches(self, ref: Reference) -> bool:
        return fnmatch.fnmatchcase(ref.name, self.match)


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    plain_http: bool | None = None
    ca_file: str = ""


@dataclass(frozen=True, slots=True)
class Policy:
    path: str
    default: str
    rules: tuple[Rule, ...]
    keys: Mapping[str, PublicKey]
    trust_roots: Mapping[str, Path]
    registries: Mapping[str, RegistryConfig]

    def rule_for(self, ref: Reference) -> Rule | None:
        """The first rule matching ``ref`` (None: the policy default applies)."""
        return next((r for r in self.rules if r.matches(ref)), None)

    def registry(self, host: str) -> RegistryConfig:
        return self.registries.get(host, RegistryConfig())


def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _table(obj: Any, path: str, allowed: set[str], required: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise PolicyError(f"{path}: expected a table, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise PolicyError(f"{path}: unknown key(s) {unknown} (allowed: {sorted(allowed)})")
    missing = sorted(required - set(obj))
    if missing:
        raise PolicyError(f"{path}: missing key(s) {missing}")
    return obj


def _str(obj: dict[str, Any], key: str, path: str, default: str = "", choices: tuple[str, ...] = ()) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise PolicyError(f"{_where(path, key)}: expected a string, got {type(value).__name__}")
    if choices and value not in choices:
        raise PolicyError(f"{_where(path, key)}: {value!r} is not one of {list(choices)}")
    return value


def _str_list(obj: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{_where(path, key)}: expected an array of strings")
    return tuple(value)


def _resolve(base: Path, text: str) -> Path:
    p = Path(text)
    return p if p.is_absolute() else base / p


def parse_policy(text: str, path: str = "<policy>", base: Path | None = None) -> Policy:
    """Parse a policy document; key files are loaded now (relative to ``base``).

    Raises:
        PolicyError: bad TOML, unknown or missing keys, wrong types, unknown key or trust-root
            names in rules, unreadable or unsupported key files, missing trust-root files.
    """
    base = base or Path(path).parent
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PolicyError(f"failed to parse policy {path!r}: {err}") from err
    try:
        return _parse(doc, path, base)
    except PolicyError as err:
        raise PolicyError(f"failed to parse policy {path!r}: {err}") from err


def _parse(doc: dict[str, Any], path: str, base: Path) -> Policy:
    _table(doc, "$", {"version", "default", "keys", "trust_roots", "rules", "registries"})
    if doc.get("version", 1) != 1:
        raise PolicyError(f"version: {doc.get('version')!r} is not supported (expected 1)")
    default = _str(doc, "default", "", "reject", ("reject", "accept"))
    keys: dict[str, PublicKey] = {}
    for name, spec in _table(doc.get("keys", {}), "keys", set(doc.get("keys", {}))).items():
        t = _table(spec, f"keys.{name}", {"path"}, {"path"})
        keys[name] = load_public_key(_resolve(base, _str(t, "path", f"keys.{name}")), name)
    roots: dict[str, Path] = {}
    for name, spec in _table(doc.get("trust_roots", {}), "trust_roots", set(doc.get("trust_roots", {}))).items():
        t = _table(spec, f"trust_roots.{name}", {"path"}, {"path"})
        roots[name] = _resolve(base, _str(t, "path", f"trust_roots.{name}"))
        if not roots[name].is_file():
            raise PolicyError(f"trust_roots.{name}.path: {str(roots[name])!r} does not exist")
    rules_raw = doc.get("rules", [])
    if not isinstance(rules_raw, list):
        raise PolicyError("rules: expected an array of tables ([[rules]])")
    rules = tuple(_rule(r, f"rules[{i}]", keys, roots) for i, r in enumerate(rules_raw))
    registries: dict[str, RegistryConfig] = {}
    for host, spec in _table(doc.get("registries", {}), "registries", set(doc.get("registries", {}))).items():
        where = f"registries.{host}"
        t = _table(spec, where, {"plain_http", "ca_file"})
        plain = t.get("plain_http")
        if plain is not None and not isinstance(plain, bool):
            raise PolicyError(f"{where}.plain_http: expected a boolean")
        ca = _str(t, "ca_file", where)
        registries[host] = RegistryConfig(plain, str(_resolve(base, ca)) if ca else "")
    return Policy(path, default, rules, keys, roots, registries)


def _rule(raw: Any, where: str, keys: Mapping[str, PublicKey], roots: Mapping[str, Path]) -> Rule:
    t = _table(raw, where, {"match", "action", "keys", "identities", "unsigned"}, {"match"})
    rule_keys = _str_list(t, "keys", where)
    for k in rule_keys:
        if k not in keys:
            raise PolicyError(f"{where}.keys: unknown key {k!r} (defined: {sorted(keys)})")
    idents = []
    raw_ids = t.get("identities", [])
    if not isinstance(raw_ids, list):
        raise PolicyError(f"{where}.identities: expected an array of tables")
    for i, item in enumerate(raw_ids):
        w = f"{where}.identities[{i}]"
        it = _table(item, w, {"trust_root", "issuer", "subject"}, {"trust_root", "issuer", "subject"})
        ident = Identity(_str(it, "trust_root", w), _str(it, "issuer", w), _str(it, "subject", w))
        if ident.trust_root not in roots:
            raise PolicyError(f"{w}.trust_root: unknown trust root {ident.trust_root!r} (defined: {sorted(roots)})")
        idents.append(ident)
    action = _str(t, "action", where, "verify", ACTIONS)
    if action == "verify" and not rule_keys and not idents:
        raise PolicyError(f"{where}: action 'verify' needs 'keys' or 'identities'")
    return Rule(_str(t, "match", where), action, rule_keys, tuple(idents),
                _str(t, "unsigned", where, "reject", UNSIGNED))


def load_policy(path: Path) -> Policy:
    """Read and parse the policy file at ``path``. Raises PolicyError (also when unreadable)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise PolicyError(f"failed to read policy {str(path)!r}: {err}") from err
    return parse_policy(text, str(path), path.parent)
