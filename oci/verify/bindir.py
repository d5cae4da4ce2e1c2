"""``runwasm-verify``: an image verifier for containerd 2.x's ``bindir`` plugin.

containerd 2.3.4's protocol (``pkg/imageverifier/bindir``; configured by
``[plugins."io.containerd.image-verifier.v1.bindir"] bin_dir, max_verifiers,
per_verifier_timeout``): before a pull through the transfer service fetches any content,
containerd runs every file in ``bin_dir`` (sorted by name, at most ``max_verifiers``) as::

    <bin> -name <reference as given> -digest <resolved digest> -stdin-media-type application/vnd.oci.descriptor.v1+json

with the resolved image descriptor (index or manifest) as JSON on stdin. Exit status 0
accepts, anything else refuses; the first 32 KiB of stdout (trimmed) is the reason containerd
puts in its error ("image verifier bindir blocked pull of NAME with digest D for reason:
verifier BIN rejected image (exit code N): REASON"); stderr goes to containerd's debug log.
A verifier killed by ``per_verifier_timeout`` (default 10 s), or killed by any signal, gives no
judgement and the pull fails with an error (fail closed). containerd lets pulls through when
``bin_dir`` does not exist or is empty.

This program: the policy is ``$RUNWASM_VERIFY_POLICY`` or ``/etc/runwasm/verify-policy.toml``
(``bin_dir`` must hold only executables: keep the policy elsewhere). Signatures are fetched
from the image's registry. Exit 0 = accepted (also "unsigned, warn"), 1 = refused, 2 = the
verifier could not judge (bad invocation, unreadable policy, unexpected error): all refusals
fail closed. Newer containerd's optional ``-operation`` flag and
``application/vnd.containerd.image-verifier.input.v1+json`` stdin are accepted as well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DESCRIPTOR_MEDIA_TYPE = "application/vnd.oci.descriptor.v1+json"
INPUT_MEDIA_TYPE = "application/vnd.containerd.image-verifier.input.v1+json"
OUTPUT_LIMIT = 1 << 15  # containerd keeps this much of stdout
POLICY_ENV = "RUNWASM_VERIFY_POLICY"
MAX_STDIN = 1 << 20


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Usage(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="runwasm-verify", add_help=True,
                description="containerd image verifier (bindir protocol): cosign/Sigstore signatures")
    for flag, required in (("name", True), ("digest", True), ("stdin-media-type", False), ("operation", False)):
        p.add_argument(f"-{flag}", f"--{flag}", dest=flag.replace("-", "_"), required=required)
    p.add_argument("-policy", "--policy", dest="policy", help=f"policy file (default ${POLICY_ENV} or /etc/runwasm/verify-policy.toml)")
    return p


def _descriptor_digest(raw: bytes, media_type: str) -> str:
    obj = json.loads(raw) if raw.strip() else {}
    if not isinstance(obj, dict):
        raise ValueError("stdin is not a JSON object")
    if media_type == INPUT_MEDIA_TYPE:
        obj = obj.get("descriptor") or obj.get("Descriptor") or {}
    digest = obj.get("digest", "")
    return digest if isinstance(digest, str) else ""


def _say(text: str) -> None:
    data = text.encode()[:OUTPUT_LIMIT - 64]
    sys.stdout.write(data.decode(errors="ignore") + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status containerd judges by."""
    try:
        ns = _parser().parse_args(argv)
    except _Usage as err:
        _say(f"runwasm-verify: bad invocation: {err}")
        return 2
    try:
        return _verify(ns)
    except Exception as err:  # noqa: BLE001 - fail closed on anything unexpected, and say why
        _say(f"runwasm-verify: cannot judge image {ns.name!r} ({ns.digest}): {type(err).__name__}: {err}")
        return 2


def _verify(ns: argparse.Namespace) -> int:
    from runwasm.oci.digest import Digest
    from runwasm.oci.errors import OciError
    from runwasm.oci.verify.policy import DEFAULT_POLICY_PATH, load_policy
    from runwasm.oci.verify.sources import RegistrySource
    from runwasm.oci.verify.verifier import judge

    media_type = ns.stdin_media_type or DESCRIPTOR_MEDIA_TYPE
    if media_type not in (DESCRIPTOR_MEDIA_TYPE, INPUT_MEDIA_TYPE):
        _say(f"runwasm-verify: refusing image {ns.name!r}: unknown -stdin-media-type {media_type!r}")
        return 2
    raw = sys.stdin.buffer.read(MAX_STDIN)
    try:
        digest = Digest.parse(ns.digest)
        stdin_digest = _descriptor_digest(raw, media_type)
    except (ValueError, OciError) as err:
        _say(f"runwasm-verify: refusing image {ns.name!r}: bad input: {err}")
        return 2
    if stdin_digest and stdin_digest != str(digest):
        _say(f"runwasm-verify: refusing image {ns.name!r}: -digest {str(digest)!r} but the descriptor on"
             f" stdin has {stdin_digest!r}")
        return 2
    path = Path(ns.policy or os.environ.get(POLICY_ENV) or DEFAULT_POLICY_PATH)
    try:
        policy = load_policy(path)
    except OciError as err:
        _say(f"runwasm-verify: refusing image {ns.name!r} ({digest}): {err}")
        return 2
    j = judge(policy, ns.name, digest, RegistrySource(policy.registries, timeout=20.0))
    _say(j.reason)
    print(f"runwasm-verify: {'ok' if j.ok else 'refused'}: {j.reason}", file=sys.stderr)
    return 0 if j.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
