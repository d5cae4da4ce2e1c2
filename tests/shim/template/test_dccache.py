"""The template's cache of compiled dataclass methods (shim/template/dccache.py)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwasm.shim.template import dccache


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    dccache.uninstall()
    assert "exec" not in vars(dataclasses)


def _define() -> type:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Point:
        """A frozen dataclass with a default."""

        x: int
        y: str = "b"

    return Point


def test_second_boot_runs_the_saved_code_and_classes_behave_the_same(tmp_path: Path) -> None:
    path = str(tmp_path / "pyc" / "dc.marshal")
    plain = _define()
    dccache.install(path)
    assert dccache.hits == 0
    first = _define()
    assert dccache.hits == 0
    assert dccache.save()
    assert os.stat(path).st_mode & 0o777 == 0o644
    dccache.uninstall()

    dccache.install(path)  # the next boot
    cached = _define()
    assert dccache.hits >= 5  # __init__, __repr__, __eq__, __setattr__, __delattr__ (and __hash__)
    for cls in (first, cached):
        p = cls(1)
        assert (p.x, p.y) == (1, "b")
        assert repr(p).endswith("Point(x=1, y='b')")
        assert p == cls(1, "b")
        assert hash(p) == hash(cls(1))
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.x = 2  # type: ignore[misc]
        for name in ("__init__", "__repr__", "__eq__", "__setattr__"):
            assert getattr(cls, name).__code__.co_code == getattr(plain, name).__code__.co_code, name
            assert getattr(cls, name).__annotations__ == getattr(plain, name).__annotations__, name


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def test_foreign_corrupt_or_writable_files_are_ignored(tmp_path: Path) -> None:
    import marshal

    code = compile("x = 1", "<string>", "exec")
    good = dccache.encode({"x = 1": marshal.dumps(code), "y = 2": marshal.dumps(compile("y = 2", "<string>", "exec"))})
    path = tmp_path / "dc.marshal"
    _write(path, good)
    table = dccache._load(str(path))
    assert len(table) == 2
    assert table.get("x = 1") == code
    assert table.get("z = 3") is None
    assert sorted(table.records()) == ["x = 1", "y = 2"]
    _write(path, good, 0o664)  # group-writable: not trusted
    assert len(dccache._load(str(path))) == 0
    _write(path, b"runwasm-dataclasses-v2 cpython-99 0\n" + good.partition(b"\n")[2])  # another interpreter
    assert len(dccache._load(str(path))) == 0
    _write(path, good[:-10])  # truncated
    assert len(dccache._load(str(path))) == 0
    _write(path, dccache.HEADER + b"\n" + b"\xff\xff\xff\x00garbage")
    assert len(dccache._load(str(path))) == 0
    link = tmp_path / "link"
    _write(path, good)
    link.symlink_to(path)
    assert len(dccache._load(str(link))) == 0
    assert len(dccache._load(str(tmp_path / "missing"))) == 0


def test_an_unwritable_place_only_means_no_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    dccache.install(str(blocker / "sub" / "dc.marshal"))  # its directory cannot exist
    _define()
    assert dccache.save() is False
    assert sorted(os.listdir(tmp_path)) == ["file"]
