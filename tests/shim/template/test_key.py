"""Template socket naming and the code identity a template watches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runwasm.shim.template import key


def test_socket_is_keyed_on_the_installation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(key.ENV_DIR, str(tmp_path))
    path = key.socket_path(os.environ)
    assert path == str(tmp_path / f"template-{key.install_key()}.sock")
    assert key.install_key() == key.install_key()
    monkeypatch.delenv(key.ENV_DIR)
    assert key.socket_path(os.environ).startswith(key.DEFAULT_DIR + "/")


def test_another_installation_gets_another_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mine = key.install_key()
    monkeypatch.setattr(key, "package_path", lambda: [str(tmp_path)])
    assert key.install_key() != mine


def test_code_identity_changes_with_the_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "shim" / "sub").mkdir(parents=True)
    mod = tmp_path / "shim" / "sub" / "m.py"
    mod.write_text("x = 1\n")
    monkeypatch.setattr(key, "package_path", lambda: [str(tmp_path)])
    before = key.code_identity()
    assert key.code_identity() == before
    mod.write_text("x = 22\n")
    assert key.code_identity() != before


def test_namespaces_name_every_kind_of_this_process() -> None:
    ids = dict(item.split("=") for item in key.namespaces().split(","))
    assert set(ids) == set(key.NAMESPACES)
    st = os.stat("/proc/self/ns/net")
    assert ids["net"] == f"{st.st_dev}:{st.st_ino}"
