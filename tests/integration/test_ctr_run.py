"""``ctr run --rm --runtime io.containerd.runwasm.v1`` on packed Wasm images: output, exit, args."""

from __future__ import annotations

import time

import pytest

from tests.integration.daemon import Containerd, wait_status

pytestmark = pytest.mark.integration


def test_import_keeps_wasm_platform(containerd: Containerd, wasm_images: dict[str, str]) -> None:
    listing = containerd.ctr("images", "ls").stdout
    line = next(ln for ln in listing.splitlines() if ln.startswith(wasm_images["hello"] + " "))
    assert "wasip1/wasm" in line


def test_hello_prints_and_exits_zero(containerd: Containerd, wasm_images: dict[str, str]) -> None:
    res = containerd.run(wasm_images["hello"], "hello1")
    assert res.returncode == 0, res.output
    assert res.stdout == "hello from wasm\n"
    assert "hello1" not in containerd.ctr("containers", "ls", "-q").stdout.split()


@pytest.mark.parametrize(("image", "args", "status"), [
    ("exit7", (), 7),
    ("exit_arg", ("/exit_arg.wasm", "42"), 42),
    ("exit_arg", ("/exit_arg.wasm", "0"), 0),
])
def test_exit_status_is_ctr_run_status(containerd: Containerd, wasm_images: dict[str, str], image: str,
                                       args: tuple[str, ...], status: int) -> None:
    res = containerd.run(wasm_images[image], f"exit-{image}-{status}", *args)
    assert res.returncode == status, res.output


def test_args_and_env_reach_the_module(containerd: Containerd, wasm_images: dict[str, str]) -> None:
    # ctr replaces the whole process.args (entrypoint included) with what follows the id.
    res = containerd.run(wasm_images["argsenv"], "argsenv1", "/argsenv.wasm", "foo", "bar baz",
                         extra=("--env", "GREETING=hi there"))
    assert res.returncode == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[:3] == ["arg: /argsenv.wasm", "arg: foo", "arg: bar baz"]
    assert "env: GREETING=hi there" in lines


def test_same_id_can_run_again_after_rm(containerd: Containerd, wasm_images: dict[str, str]) -> None:
    for _ in range(2):
        res = containerd.run(wasm_images["hello"], "again1")
        assert (res.returncode, res.stdout) == (0, "hello from wasm\n"), res.output


def test_exec_into_a_running_wasm_task(containerd: Containerd, wasm_images: dict[str, str]) -> None:
    """``ctr task exec`` of a module from the container's rootfs: a new process in the task's
    cgroup (``ctr task ps`` lists it), with its own exit status; a non-module is refused."""
    cid = "wasm-exec1"
    containerd.run(wasm_images["sleep"], cid, rm=False, detach=True, check=True)
    init_pid, _ = wait_status(containerd, cid, "RUNNING")
    containerd.ctr("task", "exec", "-d", "--exec-id", "blocker", "--fifo-dir", str(containerd.fifo_dir), cid,
                   "/sleep.wasm")
    deadline = time.monotonic() + 30
    pids: list[str] = []
    while time.monotonic() < deadline:
        pids = containerd.ctr("task", "ps", cid).stdout.split()[2::2]
        if len(pids) >= 2:
            break
        time.sleep(0.1)
    assert str(init_pid) in pids
    assert len(pids) == 2, pids  # the exec runs in the container's cgroup
    containerd.ctr("task", "kill", "--exec-id", "blocker", "-s", "SIGKILL", cid)
    refused = containerd.ctr("task", "exec", "--exec-id", "bad", "--fifo-dir", str(containerd.fifo_dir), cid,
                             "/no/such.wasm", check=False)
    assert refused.returncode != 0
    assert "/no/such.wasm" in refused.output, refused.output
    containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
    wait_status(containerd, cid, "STOPPED")
    containerd.ctr("task", "rm", cid)
    containerd.ctr("containers", "rm", cid)
