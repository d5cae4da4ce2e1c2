"""``runwasm image sign|verify|keygen`` (wired into ``runwasm.oci.image_cli``).

- ``sign --key KEY REF``: sign the image ``REF`` (its digest in the store, or ``--digest``, or
  the entry of ``--output-layout DIR`` naming it, or resolved from its registry with ``--push``)
  as cosign does; the signature goes to the store
  (when the image is there), to ``--output-layout DIR`` and/or to the registry (``--push``, as
  the ``.sig`` tag, or as an OCI 1.1 referrer with ``--referrer``).
- ``verify --policy POLICY REF``: print the judgement for a stored image (or ``--remote``: the
  image and signatures in its registry, as ``runwasm-verify`` does); exit 0 accepted, 1 refused.
- ``keygen [--type ecdsa-p256|ed25519] PREFIX``: write ``PREFIX.key`` (PKCS#8, mode 0600) and
  ``PREFIX.pub`` (the public key a policy names).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_arguments(sub: Any, add_root: Callable[[argparse.ArgumentParser], None], sign_fn: Any, verify_fn: Any,
                  keygen_fn: Any) -> None:
    p = sub.add_parser("sign", help="sign an image with a key (cosign signature format)")
    p.add_argument("--key", required=True, help="private key: PEM PKCS#8/SEC1, ECDSA P-256 or Ed25519")
    p.add_argument("--digest", help="sign this digest instead of the stored image's")
    p.add_argument("--push", action="store_true", help="push the signature to the image's registry")
    p.add_argument("--referrer", action="store_true", help="with --push: OCI 1.1 referrer instead of the .sig tag")
    p.add_argument("--output-layout", metavar="DIR", help="also write the signature image into an OCI layout dir")
    p.add_argument("-a", "--annotation", action="append", metavar="K=V", help="optional payload annotation")
    p.add_argument("--policy", help="policy whose [registries] table says how to reach the registry")
    p.add_argument("name", metavar="REF")
    add_root(p)
    p.set_defaults(func=sign_fn)

    p = sub.add_parser("verify", help="check an image against a signature policy")
    p.add_argument("--policy", required=True, help="policy TOML file")
    p.add_argument("--remote", action="store_true", help="check the image and signatures in its registry")
    p.add_argument("name", metavar="REF")
    add_root(p)
    p.set_defaults(func=verify_fn)

    p = sub.add_parser("keygen", help="generate a signing key pair (PREFIX.key, PREFIX.pub)")
    p.add_argument("--type", default="ecdsa-p256", choices=("ecdsa-p256", "ed25519"))
    p.add_argument("prefix", metavar="PREFIX")
    p.set_defaults(func=keygen_fn)


def _remote_target(name: str, registries: Any) -> Any:
    from runwasm.oci.errors import NotFoundError
    from runwasm.oci.image import Descriptor
    from runwasm.oci.reference import Reference
    from runwasm.oci.verify.registry import Registry

    ref = Reference.parse(name)
    reg = Registry(ref.domain, registries.get(ref.domain))
    fetched = reg.get_manifest(ref.path, str(ref.digest) if ref.digest else ref.tag)
    if fetched is None:
        raise NotFoundError(f"failed to resolve {name!r}: not found in its registry")
    return ref, reg, Descriptor(fetched.media_type, fetched.digest, len(fetched.data))


def _layout_target(directory: Path, ref: Any) -> Any:
    """The descriptor an OCI layout directory's index.json names ``ref`` with (full name in
    ``io.containerd.image.name`` / ``org.opencontainers.image.ref.name``, or just the tag)."""
    from runwasm.oci import mediatypes as mt
    from runwasm.oci.errors import InvalidArgumentError
    from runwasm.oci.image import Index
    from runwasm.oci.reference import Reference

    path = directory / "index.json"
    if not path.is_file():
        return None
    for desc in Index.from_json(path.read_bytes(), str(path)).manifests:
        for key in (mt.ANNOTATION_IMAGE_NAME, mt.ANNOTATION_REF_NAME):
            value = desc.annotations.get(key, "")
            try:
                if value and (value == ref.tag or str(Reference.parse(value)) == str(ref)):
                    return desc
            except InvalidArgumentError:
                continue
    return None


def sign(ns: argparse.Namespace, root: Path) -> int:
    from runwasm.oci.digest import Digest
    from runwasm.oci.errors import NotFoundError
    from runwasm.oci.image import Descriptor
    from runwasm.oci.images import ImageStore
    from runwasm.oci.reference import Reference
    from runwasm.oci.store import ContentStore
    from runwasm.oci.verify import sign as signmod
    from runwasm.oci.verify.keys import load_private_key
    from runwasm.oci.verify.policy import load_policy
    from runwasm.oci.verify.registry import Registry

    key = load_private_key(Path(ns.key))
    registries = load_policy(Path(ns.policy)).registries if ns.policy else {}
    ref = Reference.parse(ns.name)
    store, images = ContentStore(root), ImageStore(root)
    subject: Descriptor | None = None
    in_store = False
    try:
        subject = images.get(ns.name).target
        in_store = True
    except NotFoundError:
        pass
    reg = Registry(ref.domain, registries.get(ref.domain)) if ns.push else None
    if ns.digest:
        digest = Digest.parse(ns.digest)
        if subject is None or subject.digest != digest:
            subject = None
            if reg is not None:
                fetched = reg.get_manifest(ref.path, str(digest))
                if fetched is not None:
                    subject = Descriptor(fetched.media_type, digest, len(fetched.data))
    elif subject is None and ns.output_layout and (found := _layout_target(Path(ns.output_layout), ref)) is not None:
        subject = found
    elif subject is None:
        if not ns.push:
            raise NotFoundError(f"failed to sign {ns.name!r}: not in the store {str(root)!r} nor in --output-layout"
                                " (import it, pass --digest, or --push to sign it in its registry)")
        _, reg, subject = _remote_target(ns.name, registries)
    digest = Digest.parse(ns.digest) if ns.digest else subject.digest  # type: ignore[union-attr]
    annotations = dict(a.split("=", 1) for a in ns.annotation or [])
    layer = signmod.sign_layer(key, ref, digest, annotations)
    what = f"{ref.name}@{digest}"
    if in_store and subject is not None and subject.digest == digest:
        rec = signmod.to_store(store, images, ref, digest, layer, key.public)
        print(f"signed {what}: store record {rec.name}")
    if ns.output_layout:
        signmod.to_layout(Path(ns.output_layout), ref, digest, layer, key.public)
        print(f"signed {what}: layout {ns.output_layout}")
    if reg is not None:
        if subject is None:
            raise NotFoundError(f"failed to push signature of {what}: the image is not in its registry")
        pushed = signmod.push(reg, ref, subject, layer, referrer=ns.referrer, signer=key.public)
        print(f"signed {what}: pushed {'referrer' if ns.referrer else 'signature image'} {pushed}")
    print(f"key {key.public.algorithm} sha256:{key.public.key_id[:16]}", file=sys.stderr)
    return 0


def verify(ns: argparse.Namespace, root: Path) -> int:
    from runwasm.oci.images import ImageStore
    from runwasm.oci.store import ContentStore
    from runwasm.oci.verify.policy import load_policy
    from runwasm.oci.verify.sources import RegistrySource, StoreSource
    from runwasm.oci.verify.verifier import judge

    policy = load_policy(Path(ns.policy))
    if ns.remote:
        ref, _, target = _remote_target(ns.name, policy.registries)
        j = judge(policy, str(ref), target.digest, RegistrySource(policy.registries))
    else:
        store, images = ContentStore(root), ImageStore(root)
        record = images.get(ns.name)
        j = judge(policy, record.name, record.target.digest, StoreSource(store, images))
    print(j.reason)
    return 0 if j.ok else 1


def keygen(ns: argparse.Namespace) -> int:
    from runwasm.oci.verify.keys import generate_key_pair

    priv, pub = generate_key_pair(ns.type)
    key_path, pub_path = Path(f"{ns.prefix}.key"), Path(f"{ns.prefix}.pub")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(priv)
    pub_path.write_bytes(pub)
    print(f"{key_path}\n{pub_path}")
    return 0
