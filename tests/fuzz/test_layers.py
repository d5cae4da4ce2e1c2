"""Fuzz: the layer readers, fed hostile tars and corrupted images.

* ``oci.mounts.extract.extract_tar`` (the fallback rungs): random members with ``..``, absolute
  names, symlinks and hard links pointing out of the layer, whiteouts, devices, odd types,
  truncated or bit-flipped streams. Properties: it succeeds or raises ``InvalidArgumentError``;
  nothing outside the target directory is created, changed or followed; no fd leaks.
* ``oci.erofs.from_tar.tar_to_erofs``: the same tars. It succeeds or raises an ``OciError``
  (no partial image left behind), and what it writes reads back with ``ErofsImage`` with no
  ``..`` or ``/`` in any name.
* ``oci.erofs.reader.ErofsImage`` on a valid image with bytes flipped or cut: walking and reading
  it raises only ``OciError`` and ends (a bounded walk, even over directory cycles).
* ``oci.layout_import.import_layout`` (``runwasm image import``): hostile layout tarballs
  (unsafe member names, bad index.json, bad digests, cut streams) import or raise ``OciError``,
  leave no ingest leftovers and write nothing outside the store root.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runwasm.oci.erofs.from_tar import tar_to_erofs
from runwasm.oci.erofs.reader import ErofsImage
from runwasm.oci.errors import InvalidArgumentError, OciError
from runwasm.oci.mounts.extract import extract_tar
from tests.fuzz.conftest import open_fds

pytestmark = pytest.mark.fuzz

COMPONENTS = ["a", "b", "c", "..", ".", "", ".wh.a", ".wh..wh..opq", ".wh.", "x" * 120]
names = st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=4).map("/".join) | \
    st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=3).map(lambda p: "/" + "/".join(p))
link_targets = st.sampled_from(["/", "..", "../..", "../outside", "../outside/victim", "/etc/passwd",
                                "a", "a/b", "b", "", "c/../../outside"])
KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE,
         tarfile.CHRTYPE, tarfile.BLKTYPE, b"Z"]


class Member(NamedTuple):
    name: str
    type: bytes
    mode: int
    uid: int
    mtime: int
    data: bytes
    linkname: str
    dev: tuple[int, int]


class Damage(NamedTuple):
    kind: str  # "none", "cut" (keep a prefix of `at` bytes) or "flip" (xor the byte at `at`)
    at: int
    xor: int


@st.composite
def members(draw: st.DrawFn) -> Member:
    kind = draw(st.sampled_from(KINDS))
    return Member(
        draw(names), kind, draw(st.integers(0, 0o7777)), draw(st.integers(0, 70000)), draw(st.integers(0, 2**33)),
        draw(st.binary(max_size=600)) if kind == tarfile.REGTYPE else b"",
        draw(link_targets) if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else "",
        draw(st.sampled_from([(0, 0), (1, 3), (1, 5)])))


layer_tars = st.tuples(st.lists(members(), max_size=10), st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
                       st.builds(Damage, st.sampled_from(["none", "none", "cut", "flip"]),
                                 st.integers(0, 1 << 14), st.integers(1, 255)))


def build_tar(spec: tuple[list[Member], int, Damage]) -> bytes:
    """The tar bytes of a drawn (members, format, damage); examples print as readable members."""
    items, format_, damage = spec
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=format_) as tar:
        for m in items:
            info = tarfile.TarInfo(m.name)
            info.type, info.mode, info.uid, info.gid, info.mtime = m.type, m.mode, m.uid, m.uid, m.mtime
            info.size, info.linkname = len(m.data), m.linkname
            info.devmajor, info.devminor = m.dev
            tar.addfile(info, io.BytesIO(m.data) if m.data else None)
    raw = buf.getvalue()
    if damage.kind == "cut":
        raw = raw[:damage.at % (len(raw) + 1)]
    elif damage.kind == "flip":
        pos = damage.at % len(raw)
        raw = raw[:pos] + bytes([raw[pos] ^ damage.xor]) + raw[pos + 1:]
    return raw


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path under ``root`` (not following symlinks) with mode, size and content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            st_ = p.lstat()
            out[str(p.relative_to(root))] = (st_.st_mode, st_.st_size, p.read_bytes() if p.is_file() and
                                             not p.is_symlink() else b"")
    return out


@pytest.mark.privileged  # devices, trusted.* xattrs and chown need root
@given(layer_tars, st.booleans())
def test_extract_never_writes_outside_the_target(spec: tuple[list[Member], int, Damage], overlay: bool) -> None:
    raw = build_tar(spec)
    sandbox = Path(tempfile.mkdtemp(prefix="rw-fuzz-extract-"))
    try:
        outside = sandbox / "outside"
        outside.mkdir()
        (outside / "victim").write_bytes(b"keep me")
        before, fds = _snapshot(sandbox), open_fds()
        try:
            extract_tar(io.BytesIO(raw), sandbox / "dest", overlay_whiteouts=overlay)
        except InvalidArgumentError:
            pass
        after = _snapshot(sandbox)
        assert {k: v for k, v in after.items() if not k.startswith("dest")} == before
        assert open_fds() == fds
        for dirpath, _dirs, files in os.walk(sandbox / "dest"):
            for n in files:
                p = Path(dirpath, n)
                if not p.is_symlink():
                    assert Path(os.path.realpath(p)).is_relative_to(sandbox / "dest")
    finally:
        shutil.rmtree(sandbox)


@given(layer_tars)
def test_tar_to_erofs_reads_back_or_refuses(spec: tuple[list[Member], int, Damage]) -> None:
    raw = build_tar(spec)
    tmp = Path(tempfile.mkdtemp(prefix="rw-fuzz-erofs-"))
    try:
        out = tmp / "layer.erofs"
        fds = open_fds()
        try:
            tar_to_erofs(io.BytesIO(raw), out, uuid=b"\1" * 16)
        except OciError:
            assert not out.exists()
            assert open_fds() == fds
            return
        with ErofsImage(out) as img:
            for path, _ino in img.walk():
                assert b".." not in path.split(b"/")
        assert open_fds() == fds
        assert os.listdir(tmp) == ["layer.erofs"]
    finally:
        shutil.rmtree(tmp)


def _sample_image(dest: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, data in [("d", tarfile.DIRTYPE, b""), ("d/e", tarfile.DIRTYPE, b""),
                                 ("d/e/f", tarfile.REGTYPE, b"hello" * 300), ("d/g", tarfile.REGTYPE, b"x"),
                                 ("l", tarfile.SYMTYPE, b""), ("h", tarfile.REGTYPE, b"y" * 5000)]:
            info = tarfile.TarInfo(name)
            info.type, info.size = kind, len(data)
            if kind == tarfile.SYMTYPE:
                info.linkname = "d/e/f"
            tar.addfile(info, io.BytesIO(data) if data else None)
    tar_to_erofs(io.BytesIO(buf.getvalue()), dest, uuid=b"\2" * 16)
    return dest.read_bytes()


SAMPLE: list[bytes] = []


@given(st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(1, 255)), min_size=1, max_size=8),
       st.one_of(st.none(), st.integers(0, 1 << 16)))
def test_reader_on_a_corrupted_image_refuses_or_reads(flips: list[tuple[int, int]], cut: int | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="rw-fuzz-reader-"))
    try:
        if not SAMPLE:
            SAMPLE.append(_sample_image(tmp / "sample.erofs"))
        image = bytearray(SAMPLE[0])
        for pos, xor in flips:
            image[pos % len(image)] ^= xor
        path = tmp / "bad.erofs"
        path.write_bytes(bytes(image[:cut] if cut is not None else image))
        fds = open_fds()
        try:
            with ErofsImage(path) as img:
                for _path, ino in img.walk():
                    if ino.mode & 0o170000 in (0o100000, 0o120000):
                        img.read_data(ino, 0, 1 << 20)  # a damaged size may claim 2^64 bytes
        except OciError:
            pass
        assert open_fds() == fds
    finally:
        shutil.rmtree(tmp)


layout_names = st.sampled_from(["oci-layout", "index.json", "manifest.json", "blobs/sha256/" + "a" * 64,
                                "blobs/sha256/zz", "blobs/../../x", "/abs", "./index.json", "blobs/sha256/"])
index_docs = st.sampled_from([b"{}", b"[]", b'{"manifests": 3}', b'{"schemaVersion": 2, "manifests": []}',
                              b'{"manifests": [{"digest": "sha256:' + b"a" * 64 + b'", "size": 1,'
                              b' "mediaType": "application/vnd.oci.image.manifest.v1+json"}]}', b"not json"])


@given(st.lists(st.tuples(layout_names, st.one_of(index_docs, st.binary(max_size=80))), max_size=6),
       st.sampled_from(["none", "cut"]), st.integers(0, 1 << 12))
def test_layout_import_refuses_or_imports_inside_the_store(
        files: list[tuple[str, bytes]], damage: str, at: int) -> None:
    from runwasm.oci.images import ImageStore
    from runwasm.oci.layout_import import import_layout
    from runwasm.oci.store import ContentStore

    tmp = Path(tempfile.mkdtemp(prefix="rw-fuzz-import-"))
    try:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in files:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        raw = buf.getvalue()
        (tmp / "in.tar").write_bytes(raw[:at % (len(raw) + 1)] if damage == "cut" else raw)
        root = tmp / "root"
        store, images = ContentStore(root), ImageStore(root)
        fds = open_fds()
        try:
            import_layout(store, images, tmp / "in.tar")
        except OciError:
            assert list(store.ingest_dir.iterdir()) == []
        assert open_fds() == fds
        assert sorted(os.listdir(tmp)) == ["in.tar", "root"]
    finally:
        shutil.rmtree(tmp)
