"""Platform matching and manifest selection (pure functions, no I/O).

runwasm runs two kinds of images: Wasm (``wasi``/``wasip1``/``wasip2`` on ``wasm``) and Linux
for the host architecture. ``DEFAULT_PLATFORMS`` lists them in preference order, Wasm first
(runwasm is Wasm-first; pass an explicit platform to pick Linux from a mixed index).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from runwasm.oci import mediatypes as mt
from runwasm.oci.errors import NotFoundError
from runwasm.oci.image import Descriptor, Index, Platform

WASM_OSES = frozenset({"wasi", "wasip1", "wasip2"})
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


def host_platform() -> Platform:
    machine = os.uname().machine  # what platform.machine() reads, without importing it (~2 ms)
    return Platform("linux", _ARCH.get(machine, machine), "v8" if machine == "aarch64" else "")


WASM = Platform("wasi", "wasm")
DEFAULT_PLATFORMS: tuple[Platform, ...] = (WASM, host_platform())


def matches(want: Platform, have: Platform) -> bool:
    """True if ``have`` (from a descriptor or config) satisfies ``want``.

    Wasm OS names are interchangeable; a wanted variant must match unless ``have`` has none
    (``arm64`` images often omit ``v8``); os.features are not compared.
    """
    if want.architecture != have.architecture:
        return False
    if want.os != have.os and not (want.os in WASM_OSES and have.os in WASM_OSES):
        return False
    return not (want.variant and have.variant and want.variant != have.variant)


def select_manifest(index: Index, wanted: Sequence[Platform] = DEFAULT_PLATFORMS) -> Descriptor:
    """Choose the manifest (or nested index) descriptor for the first wanted platform.

    Descriptors without a platform match any wanted platform (their config decides later).

    Raises:
        NotFoundError: nothing matches; the message lists the platforms present.
    """
    candidates = [d for d in index.manifests if mt.is_manifest(d.media_type) or mt.is_index(d.media_type)]
    for want in wanted:
        for desc in candidates:
            if desc.platform is None or matches(want, desc.platform):
                return desc
    present = ", ".join(str(d.platform) for d in candidates if d.platform) or "none"
    raise NotFoundError(
        f"failed to select manifest: no match for {', '.join(map(str, wanted))} (present: {present})")
