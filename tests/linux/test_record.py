"""linux/record.py: a record rewritten in place, whole, on this machine's filesystem."""

from __future__ import annotations

import json
import os
from pathlib import Path

from runwasm.linux.record import PAGE, write_record


def test_rewrites_keep_the_inode_and_a_shorter_record_still_parses(tmp_path: Path) -> None:
    path = str(tmp_path / "r.json")
    write_record(path, json.dumps({"id": "c1", "mounts": ["/a/very/long/mount/point"] * 3}).encode())
    ino = os.stat(path).st_ino
    write_record(path, json.dumps({"id": "c1", "pid": 7}).encode())
    assert os.stat(path).st_ino == ino  # no temporary file, no rename
    assert json.loads(Path(path).read_text()) == {"id": "c1", "pid": 7}  # the old tail is blanked
    assert not (tmp_path / "r.json.tmp").exists()


def test_a_longer_record_overwrites_all_of_the_old_one(tmp_path: Path) -> None:
    path = str(tmp_path / "r.json")
    write_record(path, b'{"a": 1}')
    write_record(path, b'{"a": 1, "b": [1, 2, 3]}')
    assert json.loads(Path(path).read_text()) == {"a": 1, "b": [1, 2, 3]}


def test_a_record_longer_than_a_page_goes_through_a_rename_and_back(tmp_path: Path) -> None:
    path = str(tmp_path / "r.json")
    big = json.dumps({"mounts": ["m" * 100] * (PAGE // 100)}).encode()
    write_record(path, b'{"small": true}')
    ino = os.stat(path).st_ino
    write_record(path, big)
    assert os.stat(path).st_ino != ino
    assert Path(path).read_bytes() == big
    write_record(path, b'{"small": true}')  # the long file is replaced, not padded past a page
    assert json.loads(Path(path).read_text()) == {"small": True}
    assert os.path.getsize(path) <= PAGE


def test_a_missing_directory_is_an_oserror(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(FileNotFoundError):
        write_record(str(tmp_path / "gone" / "r.json"), b"{}")
