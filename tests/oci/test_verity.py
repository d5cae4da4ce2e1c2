from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runwasm.oci.errors import UnavailableError
from runwasm.oci.verity import activation_available, format_verity, read_sidecar, require_activation

needs_veritysetup = pytest.mark.skipif(shutil.which("veritysetup") is None, reason="veritysetup not installed")


def _veritysetup(img: Path, size: int, bs: int, uuid: str) -> str:
    blocks = (size + bs - 1) // bs
    out = subprocess.run(["veritysetup", "format", f"--data-blocks={blocks}", f"--hash-offset={blocks * bs}",
                          f"--data-block-size={bs}", f"--hash-block-size={bs}", "--salt=" + "00" * 32,
                          f"--uuid={uuid}", str(img), str(img)], check=True, capture_output=True, text=True).stdout
    return next(line.split()[-1] for line in out.splitlines() if line.startswith("Root hash"))


@needs_veritysetup
@pytest.mark.parametrize(("size", "bs"), [(4096, 4096), (3 * 1024 * 1024 + 4096, 4096), (600 * 4096, 4096),
                                          (128 * 4096 * 130, 4096), (70000, 512)])
def test_identical_to_veritysetup(tmp_path: Path, size: int, bs: int) -> None:
    data = os.urandom(size)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.write_bytes(data)
    theirs.write_bytes(data + bytes(-size % bs))
    info = format_verity(ours, block_size=bs)
    root = _veritysetup(theirs, size, bs, info.uuid)
    assert info.root_hash == root
    assert ours.read_bytes() == theirs.read_bytes()
    assert read_sidecar(ours) == (root, info.hash_offset)
    subprocess.run(["veritysetup", "verify", f"--hash-offset={info.hash_offset}", str(ours), str(ours), root],
                   check=True, capture_output=True)


def test_activation_is_a_probed_capability(tmp_path: Path) -> None:
    if activation_available():
        require_activation(tmp_path / "x")
    else:
        with pytest.raises(UnavailableError, match="CONFIG_DM_VERITY"):
            require_activation(tmp_path / "x")
