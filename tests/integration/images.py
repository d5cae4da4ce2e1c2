"""Test images as OCI image-layout tarballs that ``ctr images import`` accepts.

``pack_wasm_image`` goes through the user-facing ``runwasm image pack-wasm`` CLI; the busybox
image comes from ``fixtures.images.busybox_image``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.integration.daemon import venv_bin


def pack_wasm_image(module: Path, out: Path, ref: str, fmt: str = "tar") -> str:
    """``runwasm image pack-wasm MODULE -o OUT --name REF --format FMT``; returns the ref the CLI reports."""
    res = subprocess.run([str(venv_bin() / "runwasm"), "image", "pack-wasm", str(module), "-o", str(out),
                          "--name", ref, "--format", fmt], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"pack-wasm {module} failed ({res.returncode}): {res.stdout}{res.stderr}")
    reported: str = json.loads(res.stdout)["ref"]
    return reported
