"""Opening containerd's stdio paths (shim-protocol.md §9.4)."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest

from runwasm.shim.common.errors import InvalidArgumentError
from runwasm.shim.server.stdio import StdioPaths, opened


def _open_with_deadline(paths: StdioPaths) -> dict[str, int]:
    """Run opened() in a thread so a blocking open fails the test instead of hanging it."""
    result: dict[str, object] = {}
    done = threading.Event()
    release = threading.Event()

    def body() -> None:
        try:
            with opened(paths) as fds:
                result["fds"] = dict(fds)
                result["flags"] = {n: fcntl.fcntl(fd, fcntl.F_GETFL) for n, fd in fds.items()}
                done.set()
                release.wait(5)
        except BaseException as err:  # noqa: BLE001 - re-raised in the test thread
            result["err"] = err
            done.set()

    t = threading.Thread(target=body, daemon=True)
    t.start()
    assert done.wait(5), "opening the stdio blocked with no peer on the FIFOs"
    release.set()
    t.join(5)
    if "err" in result:
        raise result["err"]  # type: ignore[misc]
    return result["flags"]  # type: ignore[return-value]


def test_fifos_open_without_peers(tmp_path: Path) -> None:
    paths = []
    for n in ("in", "out", "err"):
        p = tmp_path / n
        os.mkfifo(p)
        paths.append(str(p))
    flags = _open_with_deadline(StdioPaths(*paths))
    assert set(flags) == {"stdin", "stdout", "stderr"}
    assert flags["stdin"] & os.O_ACCMODE == os.O_RDONLY
    assert not flags["stdin"] & os.O_NONBLOCK  # made blocking again for the workload
    assert flags["stdout"] & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)


def test_fifo_scheme(tmp_path: Path) -> None:
    p = tmp_path / "out"
    os.mkfifo(p)
    flags = _open_with_deadline(StdioPaths(stdout=f"fifo://{p}"))
    assert set(flags) == {"stdout"}


def test_stdout_equal_stderr_shares_one_open_file(tmp_path: Path) -> None:
    p = tmp_path / "log"
    p.write_text("")
    with opened(StdioPaths(stdout=str(p), stderr=str(p))) as fds:
        out, err = fds["stdout"], fds["stderr"]
        assert out != err
        # status flags live on the open file description: changing one shows on the other
        fcntl.fcntl(out, fcntl.F_SETFL, fcntl.fcntl(out, fcntl.F_GETFL) | os.O_NONBLOCK)
        assert fcntl.fcntl(err, fcntl.F_GETFL) & os.O_NONBLOCK
        os.write(out, b"a")
        os.write(err, b"b")
        assert os.lseek(out, 0, os.SEEK_CUR) == 2  # one shared offset
    assert p.read_text() == "ab"
    for fd in (out, err):
        with pytest.raises(OSError):
            os.fstat(fd)  # both closed on exit


def test_file_scheme_creates_and_appends(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "out.log"
    with opened(StdioPaths(stdout=f"file://{p}")) as fds:
        os.write(fds["stdout"], b"one\n")
    with opened(StdioPaths(stdout=f"file://{p}")) as fds:
        os.write(fds["stdout"], b"two\n")
    assert p.read_text() == "one\ntwo\n"


def test_plain_file_path_appends(tmp_path: Path) -> None:
    p = tmp_path / "plain"
    p.write_text("x")
    with opened(StdioPaths(stderr=str(p))) as fds:
        os.write(fds["stderr"], b"y")
    assert p.read_text() == "xy"


@pytest.mark.parametrize("uri", ["binary:///usr/bin/logger", "binary-v2:///x", "http://h/x"])
def test_bad_scheme(uri: str) -> None:
    with pytest.raises(InvalidArgumentError, match="unsupported stdout uri"):
        with opened(StdioPaths(stdout=uri)):
            pass


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="failed to open stdin"):
        with opened(StdioPaths(stdin=str(tmp_path / "nope"))):
            pass
    with pytest.raises(InvalidArgumentError, match="failed to open stdout"):
        with opened(StdioPaths(stdout=str(tmp_path / "nope"))):
            pass


def test_failure_closes_what_was_opened(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    os.mkfifo(inp)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(InvalidArgumentError):
        with opened(StdioPaths(stdin=str(inp), stdout=str(tmp_path / "missing"))):
            pass
    assert set(os.listdir("/proc/self/fd")) == before


def test_empty_means_none() -> None:
    with opened(StdioPaths()) as fds:
        assert fds == {}
