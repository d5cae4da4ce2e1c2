"""Go ``flag``-style argv parsing (shim-protocol.md §3.1)."""

from __future__ import annotations

import pytest

from runwasm.shim.entry.flags import Flags, parse


def test_containerd_start_argv() -> None:
    f = parse(["-namespace", "default", "-address", "/run/containerd/containerd.sock",
               "-publish-binary", "/usr/bin/containerd", "-id", "c1", "-debug", "start"])
    assert f == Flags(namespace="default", id="c1", address="/run/containerd/containerd.sock",
                      publish_binary="/usr/bin/containerd", debug=True, action="start")


def test_containerd_delete_argv() -> None:
    f = parse(["-namespace", "ns", "-address", "/a", "-publish-binary", "/b", "-id", "c2",
               "-bundle", "/run/x/c2", "delete"])
    assert (f.action, f.bundle, f.id, f.debug) == ("delete", "/run/x/c2", "c2", False)


@pytest.mark.parametrize("argv", [["-id", "x"], ["-id=x"], ["--id", "x"], ["--id=x"]])
def test_value_forms(argv: list[str]) -> None:
    f = parse([*argv, "start"])
    assert f.id == "x"
    assert f.action == "start"


def test_value_may_start_with_dash_when_separate() -> None:
    # Go's flag takes the next word as the value, whatever it looks like
    assert parse(["-id", "-weird", "start"]).id == "-weird"


def test_empty_inline_value() -> None:
    assert parse(["-id=", "start"]).id == ""


@pytest.mark.parametrize(("argv", "debug"), [
    (["-debug"], True), (["--debug"], True), (["-debug=true"], True), (["-debug=1"], True),
    (["-debug=t"], True), (["-debug=TRUE"], True), (["-debug=false"], False), (["-debug=0"], False), ([], False),
])
def test_debug_bool(argv: list[str], debug: bool) -> None:
    f = parse([*argv, "start"])
    assert f.debug is debug
    assert f.action == "start"


def test_bool_does_not_consume_next_word() -> None:
    f = parse(["-debug", "delete"])
    assert f.debug is True
    assert f.action == "delete"


def test_action_word_stops_parsing() -> None:
    f = parse(["-id", "a", "start", "-id", "b", "-debug", "extra"])
    assert f.id == "a"
    assert f.debug is False
    assert f.action == "start"
    assert f.rest == ("-id", "b", "-debug", "extra")


def test_double_dash_ends_flags() -> None:
    f = parse(["-id", "a", "--", "-debug"])
    assert f.debug is False
    assert f.action == "-debug"


def test_unknown_flags_tolerated() -> None:
    f = parse(["-namespace", "ns", "-future-flag", "-other=1", "-id", "c", "start"])
    assert (f.namespace, f.id, f.action) == ("ns", "c", "start")
    assert f.unknown == ("-future-flag", "-other=1")


def test_value_flag_without_value_is_unknown_not_crash() -> None:
    f = parse(["-id"])
    assert f.id == ""
    assert f.action == ""
    assert f.unknown == ("-id",)


def test_upstream_value_flags_consume_their_value() -> None:
    f = parse(["-socket", "/s", "-debug-socket", "/d", "-bundle", "/b", "start"])
    assert (f.socket, f.bundle, f.action) == ("/s", "/b", "start")
    assert f.unknown == ()


def test_info_alone() -> None:
    f = parse(["-info"])
    assert f.info is True
    assert f.action == ""
    assert f.version is False


@pytest.mark.parametrize("flag", ["-v", "-version", "--v", "--version", "-v=true"])
def test_version(flag: str) -> None:
    assert parse([flag]).version is True


def test_no_abbreviation() -> None:
    f = parse(["-i", "start"])
    assert f.info is False
    assert f.id == ""
    assert f.unknown == ("-i",)
    assert f.action == "start"
    f = parse(["-inf"])
    assert f.info is False
    f = parse(["-name", "ns", "start"])
    assert f.namespace == ""


def test_lone_dash_is_an_action_word() -> None:
    assert parse(["-", "x"]).action == "-"


def test_empty_argv() -> None:
    assert parse([]) == Flags()
