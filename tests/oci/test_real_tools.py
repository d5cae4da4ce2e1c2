"""Interoperability with real third-party image tools (Debian's umoci 0.4.7 and skopeo 1.9.3).

* an image built layer by layer with ``umoci`` (a file added, then a file deleted: a real
  whiteout) and archived by ``skopeo copy oci:DIR:tag oci-archive:OUT.tar:ref`` is imported by
  the ``runwasm image import`` CLI, listed, inspected, and its rootfs prepared through every rung
  of the ladder agrees with umoci's own unpack of the same image;
* ``skopeo copy ... docker-archive:`` output (legacy ``docker save`` format) is refused with an
  error that says how to convert it, leaves nothing behind, and the suggested conversion imports;
* the reverse: what ``runwasm image pack-wasm`` writes is a standard layout that skopeo reads
  and copies (skopeo verifies every digest and size on copy).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from runwasm.oci.mounts.rootfs import prepare_rootfs
from runwasm.oci.mounts.syscalls import is_mountpoint
from runwasm.oci.store import ContentStore

RUNWASM = str(Path(sys.executable).parent / "runwasm")
REF = "docker.io/test/umoci:v1"
TOOLS = ("umoci", "skopeo")
_missing = [t for t in TOOLS if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"needs {' and '.join(_missing)} (scripts/install-system.sh)")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="umoci unpack and mounting need root")


def _run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, check=False, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _tree(root: Path) -> dict[str, tuple[int, bytes | str | None]]:
    """Relative path -> (st_mode, file content / symlink target / None) for every entry below root."""
    out: dict[str, tuple[int, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            content: bytes | str | None = None
            if stat.S_ISREG(st.st_mode):
                content = p.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            out[str(p.relative_to(root))] = (st.st_mode, content)
    return out


class UmociImage:
    """A two-layer image built by umoci, archived by skopeo, plus umoci's own unpack of it."""

    def __init__(self, base: Path) -> None:
        self.layout = base / "layout"
        _run("umoci", "init", "--layout", self.layout)
        _run("umoci", "new", "--image", f"{self.layout}:v1")
        b1 = base / "b1"
        _run("umoci", "unpack", "--image", f"{self.layout}:v1", b1)
        r1 = b1 / "rootfs"
        (r1 / "etc").mkdir(mode=0o755)
        (r1 / "etc/greeting").write_text("hello from umoci\n")
        (r1 / "etc/removed").write_text("gone in layer 2\n")
        (r1 / "bin").mkdir(mode=0o755)
        (r1 / "bin/tool").write_bytes(b"#!/bin/sh\necho tool\n")
        (r1 / "bin/tool").chmod(0o755)
        os.symlink("greeting", r1 / "etc/link")
        os.link(r1 / "etc/greeting", r1 / "etc/greeting.hard")
        _run("umoci", "repack", "--image", f"{self.layout}:v1", b1)
        b2 = base / "b2"
        _run("umoci", "unpack", "--image", f"{self.layout}:v1", b2)
        (b2 / "rootfs/etc/removed").unlink()
        (b2 / "rootfs/etc/second").write_text("layer two\n")
        _run("umoci", "repack", "--image", f"{self.layout}:v1", b2)
        _run("umoci", "config", "--image", f"{self.layout}:v1", "--config.entrypoint", "/bin/tool",
             "--config.cmd", "arg1")
        self.reference = base / "ref"
        _run("umoci", "unpack", "--image", f"{self.layout}:v1", self.reference)
        self.oci_archive = base / "oci.tar"
        _run("skopeo", "copy", f"oci:{self.layout}:v1", f"oci-archive:{self.oci_archive}:{REF}")
        self.docker_archive = base / "docker.tar"
        _run("skopeo", "copy", f"oci:{self.layout}:v1", f"docker-archive:{self.docker_archive}:{REF}")


@pytest.fixture(scope="module")
def umoci_image(tmp_path_factory: pytest.TempPathFactory) -> UmociImage:
    if os.geteuid() != 0:
        pytest.skip("umoci unpack (without --rootless) needs root")
    return UmociImage(tmp_path_factory.mktemp("umoci"))


def _import(root: Path, archive: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RUNWASM, "image", "import", "--root", str(root), str(archive)],
                          capture_output=True, text=True, check=False, timeout=120)


@needs_root
@pytest.mark.privileged
@pytest.mark.parametrize("mode", ["auto", "erofs", "dirs", "flat"])
def test_umoci_skopeo_oci_archive_imports_and_mounts(umoci_image: UmociImage, no_leaks: Path, mode: str) -> None:
    root = no_leaks / "root"
    proc = _import(root, umoci_image.oci_archive)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == REF

    listing = _run(RUNWASM, "image", "ls", "--root", root).stdout.splitlines()
    row = next(line.split("\t") for line in listing if line.startswith(REF + "\t"))
    assert row[2:4] == ["linux/amd64", "2"]

    doc = json.loads(_run(RUNWASM, "image", "inspect", "--root", root, REF).stdout)
    layout_index = json.loads((umoci_image.layout / "index.json").read_text())
    assert doc["manifestDigest"] == layout_index["manifests"][0]["digest"]  # skopeo kept umoci's bytes
    assert [x["mediaType"] for x in doc["manifest"]["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"] * 2
    assert doc["config"]["config"]["Entrypoint"] == ["/bin/tool"]
    assert doc["config"]["config"]["Cmd"] == ["arg1"]
    assert len(doc["config"]["rootfs"]["diff_ids"]) == 2

    target = no_leaks / "rootfs"
    handle = prepare_rootfs(ContentStore(root), REF, target, "umoci-1", mode=mode)
    try:
        assert handle.method == ("erofs" if mode == "auto" else mode)
        assert (target / "etc/greeting").read_text() == "hello from umoci\n"
        assert (target / "etc/second").read_text() == "layer two\n"
        assert not (target / "etc/removed").exists()  # umoci's whiteout applied
        assert os.readlink(target / "etc/link") == "greeting"
        assert (target / "bin/tool").stat().st_mode & 0o777 == 0o755
        ours = _tree(target)
        theirs = _tree(umoci_image.reference / "rootfs")
        assert sorted(theirs) == ["bin", "bin/tool", "etc", "etc/greeting", "etc/greeting.hard", "etc/link",
                                  "etc/second"]
        assert ours == theirs
    finally:
        handle.release()
    assert not is_mountpoint(target)
    assert not target.exists()
    assert not (root / "c" / "umoci-1").exists()


@needs_root
@pytest.mark.privileged
def test_docker_archive_is_refused_clearly_and_the_hint_works(umoci_image: UmociImage, tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = _import(root, umoci_image.docker_archive)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"runwasm: failed to import {str(umoci_image.docker_archive)!r}:"
                                  " not an OCI image layout: no index.json")
    assert "docker-archive" in proc.stderr
    assert "skopeo copy docker-archive:FILE oci-archive:OUT.tar" in proc.stderr
    assert list((root / "content/blobs/sha256").iterdir()) == []
    assert _run(RUNWASM, "image", "ls", "--root", root).stdout.strip().splitlines()[1:] == []

    converted = tmp_path / "converted.tar"
    _run("skopeo", "copy", f"docker-archive:{umoci_image.docker_archive}", f"oci-archive:{converted}:{REF}")
    proc = _import(root, converted)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(_run(RUNWASM, "image", "inspect", "--root", root, REF).stdout)
    assert doc["config"]["config"]["Entrypoint"] == ["/bin/tool"]


def test_pack_wasm_output_is_read_by_skopeo(tmp_path: Path, wasm_module: Path) -> None:
    archive = tmp_path / "w.tar"
    packed = json.loads(_run(RUNWASM, "image", "pack-wasm", wasm_module, "-o", archive,
                             "--name", "docker.io/runwasm/hello:v2").stdout)

    info = json.loads(_run("skopeo", "inspect", f"oci-archive:{archive}:v2").stdout)
    assert info["Digest"] == packed["manifest"]
    assert (info["Os"], info["Architecture"]) == ("wasip1", "wasm")
    assert info["Layers"] == [packed["layer"]]

    config = json.loads(_run("skopeo", "inspect", "--config", f"oci-archive:{archive}").stdout)
    assert config["config"]["Entrypoint"] == [packed["entrypoint"]]

    # skopeo copy verifies every blob against its digest and size; the copy is byte-identical.
    copy = tmp_path / "copy"
    _run("skopeo", "copy", f"oci-archive:{archive}", f"oci:{copy}:v2")
    names = sorted(p.name for p in (copy / "blobs/sha256").iterdir())
    assert names == sorted(d.split(":")[1] for d in (packed["manifest"], packed["config"], packed["layer"]))
    raw = _run("skopeo", "inspect", "--raw", f"oci:{copy}:v2").stdout.encode()
    assert raw == (copy / "blobs/sha256" / packed["manifest"].split(":")[1]).read_bytes()
