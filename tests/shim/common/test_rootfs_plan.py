"""Planning containerd 2.3's EROFS rootfs mount lists (sans-I/O): templates, mkdir, options, errors."""

from __future__ import annotations

import pytest

from runwasm.shim.common import rootfs_plan as rp
from runwasm.shim.common.errors import InvalidArgumentError

SNAP = "/var/lib/containerd/io.containerd.snapshotter.v1.erofs/snapshots"
ROOTFS, SCRATCH = "/b/rootfs", "/b/layers"


def erofs(n: int, *extra: str) -> tuple[str, str, str, list[str]]:
    return ("erofs", f"{SNAP}/{n}/layer.erofs", "", ["ro", "loop", *extra])


def overlay(*opts: str, typ: str = "format/mkdir/overlay") -> tuple[str, str, str, list[str]]:
    return (typ, "overlay", "", list(opts))


def test_active_snapshot_on_two_layers() -> None:
    """What the erofs snapshotter returns for a container: layers top first, then the overlay."""
    p = rp.plan([erofs(3), erofs(2),
                 overlay(f"X-containerd.mkdir.path={SNAP}/4/fs:0755", f"X-containerd.mkdir.path={SNAP}/4/work:0755:1:2",
                         "lowerdir={{ overlay 0 1 }}", f"upperdir={SNAP}/4/fs", f"workdir={SNAP}/4/work", "index=off")],
                ROOTFS, SCRATCH)
    assert p.layer_dirs == ("/b/layers/0", "/b/layers/1")
    assert [m.target for m in p.mounts] == ["/b/layers/0", "/b/layers/1", ROOTFS]
    assert p.mounts[0].step == rp.ErofsLayer(f"{SNAP}/3/layer.erofs", loop_allowed=True)
    last = p.mounts[2]
    assert last.mkdirs == (rp.MkDir(f"{SNAP}/4/fs", 0o755), rp.MkDir(f"{SNAP}/4/work", 0o755, 1, 2))
    assert last.step == rp.OverlayMount(("/b/layers/0", "/b/layers/1"), f"{SNAP}/4/fs", f"{SNAP}/4/work",
                                        (("index", "off"),), readonly=False)


def test_single_layer_view_is_mounted_on_the_rootfs() -> None:
    p = rp.plan([erofs(1, "device=/x/blob1", f"{rp.DMVERITY_OPTION}{SNAP}/1/layer.erofs.dmverity")], ROOTFS, SCRATCH)
    assert p.layer_dirs == ()
    assert p.mounts[0].target == ROOTFS
    assert p.mounts[0].step == rp.ErofsLayer(f"{SNAP}/1/layer.erofs", ("/x/blob1",),
                                             f"{SNAP}/1/layer.erofs.dmverity", True)


@pytest.mark.parametrize(("template", "lowers"), [
    ("{{ mount 0 }}:{{mount 1}}:{{ mount   2 }}", ("/b/layers/0", "/b/layers/1", "/b/layers/2")),
    ("{{overlay 2 0}}", ("/b/layers/2", "/b/layers/1", "/b/layers/0")),  # counts down when A > B
    ("{{ overlay 1 2 }}:{{ mount 0 }}", ("/b/layers/1", "/b/layers/2", "/b/layers/0")),
])
def test_templates(template: str, lowers: tuple[str, ...]) -> None:
    p = rp.plan([erofs(1), erofs(2), erofs(3), overlay(f"lowerdir={template}", typ="format/overlay")], ROOTFS, SCRATCH)
    step = p.mounts[-1].step
    assert isinstance(step, rp.OverlayMount)
    assert step.lowers == lowers
    assert step.readonly  # no upper: a read-only view


def test_source_template_is_the_blob() -> None:
    p = rp.plan([erofs(1), ("format/bind", "{{ source 0 }}", "", ["ro"])], ROOTFS, SCRATCH)
    assert p.mounts[-1].step == rp.BindMount(f"{SNAP}/1/layer.erofs", readonly=True)


@pytest.mark.parametrize(("mounts", "fragment"), [
    ([], "empty rootfs mount list"),
    ([erofs(1), overlay("lowerdir={{ mount 1 }}")], "refers to mount 1, but only mounts 0..0"),
    ([erofs(1), overlay("lowerdir={{ overlay 0 3 }}")], "refers to mount 3"),
    ([erofs(1), overlay("lowerdir={{ mount -1 }}")], "refers to mount -1"),
    ([erofs(1), overlay("lowerdir={{ index 0 }}")], "unsupported template '{{ index 0 }}'"),
    ([erofs(1), overlay("lowerdir={{ target 0 }}")], "names a mount target inside the rootfs"),
    ([erofs(1), overlay("lowerdir={{ mount 0 }}}}")], "unbalanced template braces"),
    ([erofs(1), overlay("lowerdir={{ mount 0 0 }}")], "has 2 argument(s)"),
    ([erofs(1), overlay("lowerdir={{ overlay 0 }}")], "has 1 argument(s)"),
    ([erofs(1), overlay("lowerdir={{ mount 0 }}", typ="overlay")], "templates need the format/ transformer"),
    ([erofs(1), overlay("X-containerd.mkdir.path=/u", "lowerdir={{ mount 0 }}", typ="format/overlay")],
     "needs the mkdir/ transformer"),
    ([erofs(1), overlay("X-containerd.mkdir.path=u", "lowerdir={{ mount 0 }}")], "expected an absolute directory"),
    ([erofs(1), overlay("X-containerd.mkdir.path=/u:9", "lowerdir={{ mount 0 }}")], "mode must be octal"),
    ([erofs(1), overlay("X-containerd.mkdir.path=/u:0755:1", "lowerdir={{ mount 0 }}")], "DIR[:MODE[:UID:GID]]"),
    ([erofs(1), overlay("X-containerd.mkdir.path=/u:77777", "lowerdir={{ mount 0 }}")], "out of range"),
    ([("erofs", "/l.erofs", "", ["loop"])], "must be read-only"),
    ([("erofs", "/l.erofs", "", ["ro", "dax"])], "erofs option 'dax' is not supported"),
    ([("erofs", "l.erofs", "", ["ro"])], "'l.erofs' is not an absolute path"),
    ([("erofs", "/l.erofs", "", ["ro", "device=rel"])], "'rel' is not an absolute path"),
    ([("erofs", "/l.erofs", "", ["ro", "X-containerd.dmverity=rel"])], "absolute path of the dm-verity sidecar"),
    ([("mkfs/ext4", "/rw.img", "", ["X-containerd.mkfs.size=1GiB"])], "mount transformer 'mkfs' is not supported"),
    ([erofs(1), ("format/ext4", "{{ source 0 }}", "", [])], "mount type 'ext4' is not supported"),
    ([("erofs", "/l.erofs", "/sub", ["ro"])], "a mount target ('/sub') inside the rootfs"),
    ([erofs(1), erofs(2), overlay("lowerdir={{ mount 0 }}")], "mount(s) [1] are not used by a later mount"),
    ([erofs(1), overlay("lowerdir={{ mount 0 }}", "uidmap=0:1000:1")], "overlay option 'uidmap=0:1000:1'"),
    ([erofs(1), overlay("lowerdir={{ mount 0 }}", "X-containerd.other=1")], "overlay option 'X-containerd.other=1'"),
    ([erofs(1), overlay("lowerdir={{ mount 0 }}", "upperdir=/u")], "both upperdir and workdir"),
    ([erofs(1), overlay("upperdir=/u", "workdir=/w", "{{ mount 0 }}")], "overlay without lowerdir"),
    ([erofs(1), ("format/bind", "{{ mount 0 }}", "", ["noexec"])], "bind option 'noexec'"),
])
def test_bad_lists_are_refused_naming_the_mount(mounts: list[tuple[str, str, str, list[str]]], fragment: str) -> None:
    with pytest.raises(rp.PlanError) as exc:
        rp.plan(mounts, ROOTFS, SCRATCH)
    assert fragment in str(exc.value)
    assert isinstance(exc.value, InvalidArgumentError)  # mapped to InvalidArgument once
    if mounts:
        assert "rootfs mount" in str(exc.value)


@pytest.mark.parametrize(("mounts", "private"), [
    ([("overlay", "overlay", ["lowerdir=/a:/b", "upperdir=/u", "workdir=/w"])], False),  # overlayfs snapshotter
    ([("bind", "/snap/fs", ["rbind", "rw"])], False),
    ([("erofs", "/l.erofs", ["ro"])], True),
    ([("bind", "/x", []), ("format/overlay", "overlay", ["lowerdir={{ mount 0 }}"])], True),
    ([("mkdir/overlay", "overlay", [])], True),
    ([("mkfs/ext4", "/rw.img", [])], True),  # ends up refused by plan(), never mounted on the host
])
def test_needs_private(mounts: list[tuple[str, str, list[str]]], private: bool) -> None:
    assert rp.needs_private(mounts) is private
