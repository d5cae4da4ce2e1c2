"""Plan the mounting of containerd 2.3's EROFS rootfs mount lists, without doing any I/O.

With ``containerd.io/runtime-allow-mounts`` (``shim/entry/info.py``) containerd's mount manager
leaves ``erofs`` mounts and the ``format/`` and ``mkdir/`` transformers to the shim, so
``CreateTaskRequest.rootfs`` arrives as the snapshotter wrote it (containerd v2.3.4
``docs/mounts.md``, ``plugins/snapshots/erofs``), e.g. for an active snapshot on two layers::

    erofs  /…/snapshots/3/layer.erofs  [ro, loop]
    erofs  /…/snapshots/2/layer.erofs  [ro, loop]
    format/mkdir/overlay  overlay  [X-containerd.mkdir.path=/…/4/fs:0755, …,
                                    lowerdir={{ overlay 0 1 }}, upperdir=/…/4/fs, workdir=/…/4/work]

``plan`` turns such a list into a ``Plan``: every mount but the last is a *layer* mounted on a
scratch directory (``layer_dirs[i]``), the last one is mounted on the rootfs. Templates are
expanded the way containerd's format transformer does (``{{ mount N }}`` the mount point of
mount N, ``{{ source N }}`` its source, ``{{ overlay A B }}`` the mount points
A..B joined by ``:``, counting down when A > B), but only for earlier mounts; ``{{ source N }}``
is mount N's source as given (the blob, never a loop device runwasm may attach for it);
``{{ target N }}`` (a mount's target inside the rootfs) is refused, as are targets.
``X-containerd.mkdir.path=DIR[:MODE[:UID:GID]]`` options become ``MkDir`` steps. Every option is either honoured or refused (``PlanError``):

- ``erofs``: ``ro`` (required: EROFS is read-only), ``loop`` (a loop device is used only where
  the kernel cannot mount a file), ``device=PATH`` (extra blobs), ``X-containerd.dmverity=PATH``
  (the dm-verity sidecar: the layer is verified through dm-verity or not mounted).
- ``overlay``: ``lowerdir``, ``upperdir``, ``workdir`` and any other ``key[=value]`` handed to
  the kernel's overlayfs as is (it refuses what it does not know); ``X-containerd.*`` options
  other than mkdir are refused, as are ``uidmap=``/``gidmap=`` (idmapped layers: not supported).
- other types, ``mkfs/`` and unknown transformers: refused.

``needs_private`` says whether a list is one of these (it has an ``erofs`` mount or a ``format/``
or ``mkdir/`` transformer); other lists keep the plain host mount of ``shim/common/mounts.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from runwasm.shim.common.errors import RootfsPlanError as PlanError

HANDLED_TYPES = ("erofs", "format/*", "mkdir/*")
"""What ``-info`` advertises in ``containerd.io/runtime-allow-mounts``."""

ALLOW_MOUNTS_ANNOTATION = "containerd.io/runtime-allow-mounts"
TRANSFORMERS = ("format", "mkdir")
MKDIR_OPTION = "X-containerd.mkdir.path="
DMVERITY_OPTION = "X-containerd.dmverity="
_TEMPLATE = re.compile(r"\{\{(.*?)\}\}")
_CALL = re.compile(r"^\s*(mount|target|source|overlay)((?:\s+-?\d+){1,2})\s*$")


@dataclass(frozen=True, slots=True)
class MkDir:
    """A directory to create before a mount."""

    path: str
    mode: int = 0o700
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True, slots=True)
class ErofsLayer:
    """An EROFS layer to mount (from a blob file or a block device)."""

    source: str                         # the blob (a regular file) or a block device
    devices: tuple[str, ...] = ()       # device= blobs, in the given order
    dmverity: str | None = None         # X-containerd.dmverity sidecar (JSON: roothash, hashoffset)
    loop_allowed: bool = False          # the snapshotter said "loop": a loop device is acceptable


@dataclass(frozen=True, slots=True)
class OverlayMount:
    """An overlay mount of the layers below it."""

    lowers: tuple[str, ...]             # top-most first
    upper: str | None = None
    work: str | None = None
    extra: tuple[tuple[str, str | None], ...] = ()  # other overlay options, passed to the kernel
    readonly: bool = False


@dataclass(frozen=True, slots=True)
class BindMount:
    """A bind mount of a directory."""

    source: str
    readonly: bool = False


Step = ErofsLayer | OverlayMount | BindMount


@dataclass(frozen=True, slots=True)
class PlannedMount:
    """One mount of a plan, with the directories it needs first."""

    index: int
    mkdirs: tuple[MkDir, ...]
    step: Step
    target: str                         # layer_dirs[index], or the rootfs for the last one


@dataclass(frozen=True, slots=True)
class Plan:
    """How a container's rootfs is mounted, step by step."""

    rootfs: str
    layer_dirs: tuple[str, ...]         # a scratch mount point per layer (all mounts but the last)
    mounts: tuple[PlannedMount, ...]


def needs_private(mounts: Sequence[tuple[str, str, Sequence[str]]]) -> bool:
    """True when the list (``(type, source, options)`` each) has a mount type or transformer that
    only this module handles; such a list is mounted in a private mount namespace."""
    for typ, _src, _opts in mounts:
        parts = typ.split("/")
        if parts[-1] == "erofs" or any(p in TRANSFORMERS or p == "mkfs" for p in parts[:-1]):
            return True
    return False


def _what(i: int, typ: str, source: str) -> str:
    return f"rootfs mount {i} ({typ} {source!r})"


def _expand(text: str, i: int, what: str, points: Sequence[str], sources: Sequence[str], used: set[int]) -> str:
    """Expand the templates of ``text`` (an option or source of mount ``i``); adds the indexes
    of the mounts it names to ``used``."""

    def one(m: re.Match[str]) -> str:
        call = _CALL.match(m.group(1))
        if call is None:
            raise PlanError(f"{what}: unsupported template {m.group(0)!r} in {text!r}: expected "
                            "{{ mount N }}, {{ target N }}, {{ source N }} or {{ overlay A B }}")
        fn, args = call.group(1), [int(a) for a in call.group(2).split()]
        if fn == "target":
            raise PlanError(f"{what}: template {m.group(0)!r} names a mount target inside the rootfs, "
                            "which is not supported")
        if (fn == "overlay") != (len(args) == 2):
            raise PlanError(f"{what}: template {m.group(0)!r} has {len(args)} argument(s)")
        for a in args:
            if not 0 <= a < i:
                raise PlanError(f"{what}: template {m.group(0)!r} refers to mount {a}, but only mounts "
                                f"0..{i - 1} come before it")
        if fn == "overlay":
            a, b = args
            idx = list(range(a, b + 1) if a <= b else range(a, b - 1, -1))
            used.update(idx)
            return ":".join(points[k] for k in idx)
        used.add(args[0])
        return sources[args[0]] if fn == "source" else points[args[0]]

    out = _TEMPLATE.sub(one, text)
    if "{{" in out or "}}" in out:
        raise PlanError(f"{what}: unbalanced template braces in {text!r}")
    return out


def _mkdir(value: str, what: str) -> MkDir:
    path, *rest = value.split(":")
    if not path.startswith("/"):
        raise PlanError(f"{what}: {MKDIR_OPTION}{value}: expected an absolute directory path")
    if len(rest) not in (0, 1, 3):
        raise PlanError(f"{what}: {MKDIR_OPTION}{value}: expected DIR[:MODE[:UID:GID]]")
    try:
        mode = int(rest[0], 8) if rest else 0o700
        uid, gid = (int(rest[1]), int(rest[2])) if len(rest) == 3 else (None, None)
    except ValueError as err:
        raise PlanError(f"{what}: {MKDIR_OPTION}{value}: mode must be octal, uid and gid decimal") from err
    if not 0 <= mode <= 0o7777:
        raise PlanError(f"{what}: {MKDIR_OPTION}{value}: mode {rest[0]!r} out of range")
    return MkDir(path, mode, uid, gid)


def _erofs(source: str, opts: Sequence[str], what: str) -> ErofsLayer:
    devices: list[str] = []
    dmverity, loop, ro = None, False, False
    for o in opts:
        if o == "ro":
            ro = True
        elif o == "loop":
            loop = True
        elif o.startswith("device="):
            devices.append(o.partition("=")[2])
        elif o.startswith(DMVERITY_OPTION):
            dmverity = o.partition("=")[2]
            if not dmverity.startswith("/"):
                raise PlanError(f"{what}: {o!r}: expected an absolute path of the dm-verity sidecar file")
        else:
            raise PlanError(f"{what}: erofs option {o!r} is not supported (supported: ro, loop, device=PATH, "
                            f"{DMVERITY_OPTION}PATH)")
    if not ro:
        raise PlanError(f"{what}: an erofs mount must be read-only: option 'ro' missing in {list(opts)!r}")
    for p in (source, *devices):
        if not p.startswith("/"):
            raise PlanError(f"{what}: erofs blob {p!r} is not an absolute path")
    return ErofsLayer(source, tuple(devices), dmverity, loop)


def _overlay(opts: Sequence[str], what: str) -> OverlayMount:
    lowers: list[str] = []
    upper = work = None
    extra: list[tuple[str, str | None]] = []
    readonly = False
    for o in opts:
        key, eq, value = o.partition("=")
        if key == "lowerdir":
            lowers += [x for x in value.split(":") if x]
        elif key == "lowerdir+":
            lowers.append(value)
        elif key == "upperdir":
            upper = value
        elif key == "workdir":
            work = value
        elif o == "ro":
            readonly = True
        elif key.startswith("X-containerd.") or key in ("uidmap", "gidmap"):
            raise PlanError(f"{what}: overlay option {o!r} is not supported")
        else:
            extra.append((key, value if eq else None))
    if not lowers:
        raise PlanError(f"{what}: overlay without lowerdir")
    if (upper is None) != (work is None):
        raise PlanError(f"{what}: overlay needs both upperdir and workdir, or neither")
    return OverlayMount(tuple(lowers), upper, work, tuple(extra), readonly or upper is None)


def _bind(source: str, opts: Sequence[str], what: str) -> BindMount:
    readonly = False
    for o in opts:
        if o == "ro":
            readonly = True
        elif o not in ("rbind", "bind", "rw"):
            raise PlanError(f"{what}: bind option {o!r} is not supported here")
    return BindMount(source, readonly)


_BUILDERS: dict[str, Callable[[str, Sequence[str], str], Step]] = {
    "erofs": _erofs,
    "overlay": lambda _s, o, w: _overlay(o, w),
    "bind": _bind,
    "rbind": _bind,
}


def plan(mounts: Sequence[tuple[str, str, str, Sequence[str]]], rootfs: str, scratch: str) -> Plan:
    """Plan ``mounts`` (``(type, source, target, options)`` each, containerd's order) onto
    ``rootfs``, with layer mount points ``<scratch>/<index>``. Raises PlanError naming the mount
    and option at fault."""
    if not mounts:
        raise PlanError("empty rootfs mount list")
    n = len(mounts)
    points = [f"{scratch.rstrip('/')}/{i}" for i in range(n - 1)] + [rootfs]
    sources: list[str] = []
    planned: list[PlannedMount] = []
    referenced: set[int] = set()
    for i, (typ, source, target, opts) in enumerate(mounts):
        what = _what(i, typ, source)
        if target:
            raise PlanError(f"{what}: a mount target ({target!r}) inside the rootfs is not supported")
        *transformers, base = typ.split("/")
        for t in transformers:
            if t not in TRANSFORMERS:
                raise PlanError(f"{what}: mount transformer {t!r} is not supported (supported: format/, mkdir/)")
        if "format" in transformers:
            source = _expand(source, i, what, points, sources, referenced)
            opts = [_expand(o, i, what, points, sources, referenced) for o in opts]
        elif any("{{" in x for x in (source, *opts)):
            raise PlanError(f"{what}: templates need the format/ transformer")
        mkdirs: list[MkDir] = []
        rest: list[str] = []
        for o in opts:
            if o.startswith(MKDIR_OPTION):
                if "mkdir" not in transformers:
                    raise PlanError(f"{what}: {o!r} needs the mkdir/ transformer")
                mkdirs.append(_mkdir(o[len(MKDIR_OPTION):], what))
            else:
                rest.append(o)
        builder = _BUILDERS.get(base)
        if builder is None:
            raise PlanError(f"{what}: mount type {base!r} is not supported in an EROFS rootfs "
                            f"(supported: {', '.join(sorted(_BUILDERS))})")
        step = builder(source, rest, what)
        planned.append(PlannedMount(i, tuple(mkdirs), step, points[i]))
        sources.append(source)
    unused = sorted(set(range(n - 1)) - referenced)
    if unused:
        raise PlanError(f"rootfs mount(s) {unused} are not used by a later mount: only the last mount is "
                        "mounted on the rootfs, the others must be its layers")
    return Plan(rootfs, tuple(points[:-1]), tuple(planned))
