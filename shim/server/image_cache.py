"""Compiled artifacts of an image's Wasm layer, kept in containerd's content store beside the layer.

For an OCI Wasm layer (``shim/server/image_module.py``) the compiled code lives and dies with the
image, and is shared by every shim on the node (every pod, every namespace's own copy):

- the artifact is a blob of the content store (``Content.Write`` under a lease, so that GC cannot
  take it before it is referenced);
- the *layer* blob carries two labels per artifact key::

      containerd.io/gc.ref.content.runwasm.<key> = <artifact digest>   (containerd's GC follows it)
      runwasm.io/cwasm-mac.<key>                 = HMAC-SHA256(node key, key || artifact digest)

  so the artifact is referenced by the layer, which the manifest references: ``ctr images rm``
  and GC remove it with the image.

Key: sha256 over ``engine_identity`` (wasmtime version and native library, the engine config
fingerprint including the sandbox settings that change code, the CPU), the input kind and the
layer digest; the same inputs as ``runwasm.wasm.cache``'s key.

Only artifacts runwasm wrote are loaded: the MAC is under the node's secret
(``runwasm.wasm.node_key``, the on-disk cache's key) and covers the artifact's digest, and
``Content.Read`` is verified against that digest. A missing, foreign or forged label, a blob that
is gone or does not hash to its digest, is logged and the layer recompiled; the new artifact
replaces the label (the old blob becomes unreferenced and GC takes it). Never loaded.

No thundering herd: a miss takes an exclusive flock on ``<cache root>/oci-locks/<key>.lock``
(node-wide, shared by all shims), checks the labels again, and only then compiles (in a child
process, ``runwasm.wasm.precompile``) and publishes; the others wait and then load it.

Any failure (containerd refuses a write, the cache root is unsafe, the lock is not had in time)
degrades to what runs without this cache: the workload compiles the layer itself (and uses the
on-disk cache). It never fails the container. Blocking (gRPC, flock, a child process): call it
from a worker thread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from runwasm.oci.digest import Digest
from runwasm.oci.errors import OciError
from runwasm.shim.common.errors import ShimError
from runwasm.wasm.detect import SNIFF_BYTES, classify_bytes
from runwasm.wasm.identity import engine_fingerprint, engine_identity
from runwasm.wasm.node_key import LOCK_TIMEOUT, exclusive, node_key, usable_dir, write_atomic
from runwasm.wasm.sandbox import Sandbox

if TYPE_CHECKING:
    from runwasm.shim.server.containerd_api import ContainerdClient

log = logging.getLogger(__name__)

REF_LABEL = "containerd.io/gc.ref.content.runwasm."
MAC_LABEL = "runwasm.io/cwasm-mac."
KEY_LABEL = "runwasm.io/cwasm-key"
LOCK_DIR = "oci-locks"
MAC_CONTEXT = b"runwasm-oci-cwasm-v1\0"


@dataclass(frozen=True, slots=True)
class Compiled:
    """The compiled artifact of a layer, written to a host file for the workload.

    source: ``content-store`` (loaded, verified) or ``compiled`` (compiled now; ``published``
    says whether it reached the content store).
    """

    path: Path
    digest: Digest
    key: str
    source: Literal["content-store", "compiled"]
    published: bool = True


def artifact_key(identity: str, kind: str, layer: Digest) -> str:
    """Hex key of the artifact of layer ``layer`` (a ``kind``) compiled by engine ``identity``."""
    h = hashlib.sha256()
    h.update(identity.encode() + b"\0" + kind.encode() + b"\0" + str(layer).encode())
    return h.hexdigest()


def artifact_mac(secret: bytes, key: str, digest: Digest) -> str:
    """The label value that proves this node's runwasm stored ``digest`` under ``key``."""
    return hmac.new(secret, MAC_CONTEXT + key.encode() + b"\0" + str(digest).encode(), hashlib.sha256).hexdigest()


def compiled_for_layer(client: ContainerdClient, layer: Digest, module: Path, sandbox: Sandbox,
                       cache_root: Path, out_dir: Path) -> Compiled | None:
    """The compiled form of ``module`` (the bytes of ``layer``) for ``sandbox``'s engine, from the
    content store or compiled now and published there (see module doc); None when this cache
    cannot be used (the workload then compiles). Raises nothing but ``KeyboardInterrupt``-likes."""
    try:
        with open(module, "rb") as f:
            kind = classify_bytes(f.read(SNIFF_BYTES))
    except OSError as err:
        log.warning("cannot read layer file %r for precompilation: %s", str(module), err)
        return None
    if kind not in ("module", "component"):
        return None  # WAT: left to the workload (and the on-disk cache)
    locks = cache_root / LOCK_DIR
    if not usable_dir(cache_root, locks):
        return None
    secret = node_key(cache_root)
    if secret is None:
        return None
    key = artifact_key(engine_identity(engine_fingerprint(sandbox)), kind, layer)
    out = out_dir / f"{key}.cwasm"
    found = _load(client, layer, key, secret, out, definitive=False)
    if found is not None:
        return found
    with exclusive(locks / f"{key}.lock", LOCK_TIMEOUT) as locked:
        if locked:  # the definitive check: another shim may have published while we waited
            found = _load(client, layer, key, secret, out, definitive=True)
            if found is not None:
                return found
        digest = _compile(module, kind, sandbox, out, layer)
        if digest is None:
            return None
        published = locked and _publish(client, layer, key, secret, out, digest)
        return Compiled(out, digest, key, "compiled", published)


def _load(client: ContainerdClient, layer: Digest, key: str, secret: bytes, out: Path, *,
          definitive: bool) -> Compiled | None:
    """The published artifact of ``key`` written to ``out``, if the layer's labels name one that
    verifies; else None (logged when ``definitive``)."""
    try:
        labels = client.info_labels(layer)
    except (ShimError, OciError) as err:
        log.warning("cannot read the labels of layer %s, compiling without the content-store cache: %s", layer, err)
        return None
    ref, mac = labels.get(REF_LABEL + key), labels.get(MAC_LABEL + key, "")
    if ref is None:
        return None
    problem = ""
    try:
        digest = Digest.parse(ref)
    except OciError:
        problem = f"label {REF_LABEL + key} is not a digest: {ref!r}"
    else:
        if not hmac.compare_digest(mac, artifact_mac(secret, key, digest)):
            problem = "its MAC label is missing or does not match (not written by runwasm on this node)"
    if not problem:
        try:
            data = client.read_bytes(digest)
            write_atomic(out, data)
        except (ShimError, OciError) as err:  # gone (GC'd, deleted) or not the bytes of its digest
            problem = f"it cannot be read: {err}"
        except OSError as err:
            log.warning("cannot write compiled artifact %r: %s", str(out), err)
            return None
        else:
            log.info("layer %s: compiled artifact %s (key %s) loaded from the content store", layer, digest, key[:16])
            return Compiled(out, digest, key, "content-store")
    if definitive:
        log.warning("layer %s: compiled artifact %r (key %s) is unusable, recompiling; it is not loaded: %s",
                    layer, ref, key[:16], problem)
    return None


def _compile(module: Path, kind: str, sandbox: Sandbox, out: Path, layer: Digest) -> Digest | None:
    """Compile in a child process (``runwasm.wasm.precompile``); the artifact's digest, or None (logged)."""
    req = {"module": str(module), "kind": kind, "sandbox": sandbox.to_json(), "out": str(out)}
    started = time.monotonic()
    try:
        res = subprocess.run([sys.executable, "-m", "runwasm.wasm.precompile"], input=json.dumps(req).encode(),
                             capture_output=True, timeout=LOCK_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("layer %s: precompilation failed, the workload compiles it: %s", layer, err)
        return None
    if res.returncode != 0:
        log.warning("layer %s: precompilation failed (exit %d), the workload compiles it: %s", layer,
                    res.returncode, res.stderr.decode(errors="replace").strip())
        return None
    try:
        with open(out, "rb") as f:
            digest = Digest.from_hasher(hashlib.file_digest(f, "sha256"))
    except OSError as err:
        log.warning("layer %s: precompiled artifact %r unreadable, the workload compiles it: %s", layer, str(out), err)
        return None
    log.info("layer %s: compiled %s in %.2f s (artifact %s, %d bytes)", layer, kind, time.monotonic() - started,
             digest, out.stat().st_size)
    return digest


def _publish(client: ContainerdClient, layer: Digest, key: str, secret: bytes, out: Path, digest: Digest) -> bool:
    """Write the artifact into the content store and label the layer with it; False (logged) on failure."""
    try:
        data = out.read_bytes()
        with client.lease("cwasm") as lease_id:
            client.write_blob(data, f"runwasm-cwasm-{key[:32]}-{os.getpid()}-{os.urandom(4).hex()}", lease_id,
                              {KEY_LABEL: key})
            client.update_labels(layer, {REF_LABEL + key: str(digest), MAC_LABEL + key: artifact_mac(secret, key, digest)})
    except (ShimError, OciError, OSError) as err:
        log.warning("layer %s: cannot store compiled artifact %s in the content store (next run compiles again): %s",
                    layer, digest, err)
        return False
    log.info("layer %s: compiled artifact %s (key %s) stored in the content store", layer, digest, key[:16])
    return True
