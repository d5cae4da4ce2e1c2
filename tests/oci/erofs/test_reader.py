"""``ErofsImage`` on damaged images: only the documented errors, and a bounded walk."""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path

import pytest

from runwasm.oci.erofs.from_tar import tar_to_erofs
from runwasm.oci.erofs.reader import ErofsImage
from runwasm.oci.errors import InvalidArgumentError


def _image(path: Path) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("d", "d/e"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
    tar_to_erofs(io.BytesIO(buf.getvalue()), path, uuid=b"\3" * 16)
    return path


@pytest.mark.parametrize("size", [0, 1, 1024, 1100])
def test_a_file_shorter_than_a_superblock_is_invalid_argument(tmp_path: Path, size: int) -> None:
    """Found by tests/fuzz/test_layers.py: an empty or cut image raised struct.error."""
    path = tmp_path / "short.erofs"
    path.write_bytes(_image(tmp_path / "ok.erofs").read_bytes()[:size])
    with pytest.raises(InvalidArgumentError, match="shorter than a superblock"):
        ErofsImage(path)


def test_a_directory_cycle_ends_the_walk_with_invalid_argument(tmp_path: Path) -> None:
    """A damaged image whose ``d/e`` entry points back at ``d``: the walk used to recurse forever."""
    path = _image(tmp_path / "cycle.erofs")
    with ErofsImage(path) as img:
        d = img.lookup("/d")
        e = img.lookup("/d/e")
        where = img._block_addr(d, 0)
        block = img._read(where, d.size)  # the directory is small: one (possibly inline) block
    needle = struct.pack("<Q", e.nid)
    pos = [i for i in range(0, 12 * 4, 12) if block[i:i + 8] == needle]
    assert len(pos) == 1
    data = bytearray(path.read_bytes())
    data[where + pos[0]:where + pos[0] + 8] = struct.pack("<Q", d.nid)
    path.write_bytes(bytes(data))
    with ErofsImage(path) as img, pytest.raises(InvalidArgumentError, match="reached twice"):
        img.walk()
