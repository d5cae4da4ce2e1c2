"""runwasm.linux.task_net: read-only detached views of a directory tree, and the network
namespace of a serving Wasm task (real kernel, root)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from runwasm.linux import task_net

pytestmark = pytest.mark.privileged


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (open_tree, unshare)")


def test_readonly_clone_refuses_writes_and_shows_the_tree(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("data")
    (tmp_path / "sub").mkdir()
    handle = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        view = task_net.readonly_clone(handle, str(tmp_path))
    finally:
        os.close(handle)
    try:
        base = f"/proc/self/fd/{view}"
        assert Path(base, "in.txt").read_text() == "data"
        for target in (Path(base, "new.txt"), Path(base, "sub", "new.txt")):  # recursive
            with pytest.raises(OSError) as err:
                target.write_text("x")
            assert err.value.errno == errno.EROFS
        (tmp_path / "new.txt").write_text("still writable")  # the original is untouched
        assert Path(base, "new.txt").read_text() == "still writable"
    finally:
        os.close(view)


def _in_child(fn: object) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            fn()  # type: ignore[operator]
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_new_network_namespace_has_loopback_up() -> None:
    def body() -> None:
        host = os.readlink("/proc/self/ns/net")
        task_net.enter_network("")
        assert os.readlink("/proc/self/ns/net") != host
        with socket.socket() as srv:
            srv.bind(("127.0.0.1", 0))
            srv.listen()
            socket.create_connection(srv.getsockname(), timeout=5).close()

    assert _in_child(body) == 0


def test_join_network_namespace_by_path_and_none_stays() -> None:
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        path = f"/proc/{holder.pid}/ns/net"
        deadline = time.monotonic() + 30
        while os.readlink(path) == os.readlink("/proc/self/ns/net") and time.monotonic() < deadline:
            time.sleep(0.02)  # until unshare has exec'd sleep in its new namespace

        def body() -> None:
            host = os.readlink("/proc/self/ns/net")
            task_net.enter_network(None)
            assert os.readlink("/proc/self/ns/net") == host
            task_net.enter_network(path)
            assert os.readlink("/proc/self/ns/net") == os.readlink(path) != host

        assert _in_child(body) == 0
    finally:
        holder.kill()
        holder.wait()


def test_join_missing_namespace_is_a_setup_error() -> None:
    from runwasm.linux.errors import SetupError

    with pytest.raises(SetupError, match=r"failed to join network namespace '/nonexistent/ns'.*errno 2"):
        task_net.enter_network("/nonexistent/ns")
