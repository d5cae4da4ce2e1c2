"""``ctr run --privileged``, ``--uidmap/--gidmap`` and ``-t`` through real containerd, 1.6
(Debian's) and 2.3.4 (the ``containerd`` fixture's flavours; 2.3.4 is skipped with the reason
when absent), and containerd 2.3.4 reading the runtime-spec features from ``-info``."""

from __future__ import annotations

import json
import os
import selectors
import shlex
import subprocess
import time
from collections.abc import Iterator

import pytest

from fixtures.images import busybox_image
from tests.conftest import built_fixture
from tests.integration.daemon import RUNC_RUNTIME, RUNWASM_RUNTIME, Containerd, wait_status
from tests.integration.images import pack_wasm_image

pytestmark = pytest.mark.integration

BUSYBOX = "runwasm.test/busybox:linux"
HELLO = "runwasm.test/hello:tty"


@pytest.fixture(scope="module")
def daemon(containerd: Containerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """Each containerd with busybox and hello.wasm imported; its directory reachable by the
    mapped root of a user namespace (as /var/lib/containerd is)."""
    d = containerd
    d.dir.chmod(0o755)
    tmp = tmp_path_factory.mktemp("img")
    d.ctr("images", "import", str(busybox_image(tmp / "bb.tar", BUSYBOX)))
    pack_wasm_image(built_fixture("wasm", "hello.wasm"), tmp / "hello.tar", HELLO)
    d.ctr("images", "import", "--all-platforms", str(tmp / "hello.tar"))
    yield d
    d.remove_all_containers()


def _script(d: Containerd, argv: list[str], *, hold_stdin: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run ctr under script(1), so its stdin is a terminal (ctr -t needs one). With
    ``hold_stdin`` script's own stdin stays open until ctr is done (an interactive user); else it
    is /dev/null and script forwards that EOF into the pty."""
    cmd = f"stty rows 30 cols 90; exec {shlex.join(argv)}"
    p = subprocess.Popen(["script", "-qec", cmd, "/dev/null"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.PIPE if hold_stdin else subprocess.DEVNULL, env=d.env())
    try:
        out, err = p.communicate(timeout=60) if not hold_stdin else _wait_holding(p)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _wait_holding(p: subprocess.Popen[bytes], timeout: float = 60.0) -> tuple[bytes, bytes]:
    """Read stdout/stderr to EOF (ctr and script exited) while stdin stays open; kill at timeout."""
    assert p.stdout is not None
    assert p.stderr is not None
    bufs: dict[int, list[bytes]] = {p.stdout.fileno(): [], p.stderr.fileno(): []}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for fd in bufs:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(1.0):
                data = os.read(key.fd, 65536)
                if data:
                    bufs[key.fd].append(data)
                else:
                    sel.unregister(key.fd)
    if p.poll() is None and time.monotonic() >= deadline:
        p.kill()
    p.wait(10)
    return b"".join(bufs[p.stdout.fileno()]), b"".join(bufs[p.stderr.fileno()])


def test_privileged_linux_container(daemon: Containerd) -> None:
    """--privileged: every host device (/dev/ptmx among them), all capabilities, /sys rw. It failed
    with EPERM creating /dev/ptmx inside the container's devpts."""
    res = daemon.run(BUSYBOX, "priv", "/bin/sh", "-c", "readlink /dev/ptmx; test -c /dev/null && echo dev-ok; "
                     "grep CapEff /proc/self/status", extra=("--privileged",))
    assert res.returncode == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[:2] == ["pts/ptmx", "dev-ok"], res.output
    theirs = daemon.run(BUSYBOX, "priv-runc", "/bin/sh", "-c", "readlink /dev/ptmx; test -c /dev/null && echo dev-ok; "
                        "grep CapEff /proc/self/status", extra=("--privileged",), runtime=RUNC_RUNTIME)
    assert theirs.returncode == 0, theirs.output
    assert lines == theirs.stdout.splitlines()


def test_uidmap_gidmap(daemon: Containerd) -> None:
    """ctr sends runc options (IoUid/IoGid = the host ids of root) with --uidmap/--gidmap; the
    container runs in a user namespace and can reopen its stdout (the FIFO is given to it)."""
    res = daemon.run(BUSYBOX, "umap", "/bin/sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; "
                     "echo via-dev-stdout > /dev/stdout",
                     extra=("--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"))
    assert res.returncode == 0, res.output
    lines = res.stdout.splitlines()
    assert [ln.split() for ln in lines[:2]] == [["0", "100000", "65536"]] * 2, res.output
    assert lines[2:] == ["0", "via-dev-stdout"], res.output


def test_wasm_tty_run_logs_no_resize_error(daemon: Containerd) -> None:
    """ctr run -t sends ResizePty after Start; a Wasm task has no pty: a no-op, nothing logged."""
    before = daemon.log_path.read_text(errors="replace")
    argv = daemon.ctr_argv(*daemon.run_args(HELLO, "wtty", extra=("-t",)))
    res = _script(daemon, argv)
    assert res.returncode == 0, res.stdout + res.stderr
    assert b"hello from wasm" in res.stdout
    assert b"resize" not in res.stdout + res.stderr
    new = daemon.log_path.read_text(errors="replace")[len(before):]
    assert "resize pty" not in new, new
    assert "has no terminal" not in new, new


def test_exec_tty_output_is_clean(daemon: Containerd) -> None:
    """ctr task exec -t: the output is exactly what the process wrote (no stray NUL), like runc.
    (A ``^@`` shows up, for runc too, only when script(1)'s stdin is at EOF: script forwards it
    into the pty as a NUL, which the pty echoes.)"""
    outputs = []
    for runtime in (RUNWASM_RUNTIME, RUNC_RUNTIME):
        cid = "xtty-" + runtime.split(".")[2]
        daemon.run(BUSYBOX, cid, "sleep", "1000", rm=False, detach=True, check=True, runtime=runtime)
        wait_status(daemon, cid, "RUNNING")
        res = _script(daemon, daemon.ctr_argv("task", "exec", "-t", "--exec-id", "e1", cid,
                                              "/bin/sh", "-c", "sleep 0.5; echo hi; stty size"))
        assert res.returncode == 0, res.stdout + res.stderr
        # ctr 2.3 warns about cgroup v1 on its terminal first
        outputs.append(b"".join(ln for ln in res.stdout.splitlines(keepends=True) if b"DEPRECATION" not in ln))
        daemon.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
    assert outputs[0] == b"hi\r\r\n30 90\r\r\n", outputs  # ONLCR in the container pty, then in script's
    assert b"\x00" not in outputs[0]
    assert b"^@" not in outputs[0]
    assert outputs[0] == outputs[1]


def test_containerd_2_reads_the_runtime_features(containerd: Containerd) -> None:
    """containerd 2.3.4 runs ``-info`` and decodes RuntimeInfo.features (the CRI uses it, e.g. to
    allow recursive read-only mounts)."""
    if containerd.flavour != "2.3":
        pytest.skip("containerd 1.6 has no runtime introspection (ctr plugins inspect-runtime)")
    res = containerd.ctr("plugins", "inspect-runtime", "--runtime", RUNWASM_RUNTIME)
    info = json.loads(res.stdout)
    assert info["Name"] == RUNWASM_RUNTIME
    features = info["Features"]
    assert "rro" in features["mountOptions"]
    assert features["linux"]["mountExtensions"]["idmap"]["enabled"] is False
    assert features["ociVersionMin"] == "1.0.0"
    assert features["annotations"]["io.containerd.runwasm.v1.version"]
