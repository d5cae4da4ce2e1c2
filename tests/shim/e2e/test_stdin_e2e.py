"""A task's stdin through the real shim: the harness (``runwasm run``) forwards its own stdin,
closes it at EOF (CloseIO), and does not wait for input a task never reads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from runwasm.shim.harness.driver import Harness, run_task
from tests.shim.e2e import helpers as e
from tests.shim.e2e.helpers import run

RUNWASM = str(Path(sys.executable).parent / "runwasm")


async def _cat(h: Harness, cid: str, stdin: int, module: str = "cat.wasm") -> tuple[int, bytes]:
    bundle = e.make_bundle(h, cid, module)
    out = h.root / f"{cid}.out"
    ofd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        result = await run_task(h, cid, bundle, stdout=ofd, stdin=stdin)
    finally:
        os.close(ofd)
    return result.exit_status, out.read_bytes()


def test_piped_stdin_reaches_the_task_and_its_eof_ends_it(legacy: bool) -> None:
    data = bytes(range(256)) * 1024  # 256 KiB: more than a FIFO holds, so writes wait for the task

    async def body(h: Harness) -> None:
        r, w = os.pipe()

        def write() -> None:  # blocking, beside the loop; closing w is the EOF
            try:
                os.write(w, data)
            finally:
                os.close(w)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            status, out = await _cat(h, "cat-pipe", r)
        finally:
            os.close(r)
        writer.join(10)
        assert (status, len(out), out == data) == (0, len(data), True)

    run(legacy, body)


def test_devnull_and_regular_file_stdin() -> None:
    async def body(h: Harness) -> None:
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            assert await _cat(h, "cat-null", null) == (0, b"")
        finally:
            os.close(null)
        path = h.root / "input.txt"
        path.write_bytes(b"from a file\n")
        fd = os.open(path, os.O_RDONLY)
        try:
            assert await _cat(h, "cat-file", fd) == (0, b"from a file\n")
        finally:
            os.close(fd)

    run(False, body)


def test_a_terminal_stdin_is_forwarded_and_never_waited_for() -> None:
    async def body(h: Harness) -> None:
        master, slave = os.openpty()
        try:
            # a task that never reads: the run ends with it though the terminal never reaches EOF
            assert await _cat(h, "tty-hello", slave, "hello.wasm") == (0, b"hello from wasm\n")
            os.write(master, b"typed\n\x04")  # a line, then ^D: EOF for a canonical-mode terminal
            assert await _cat(h, "tty-cat", slave) == (0, b"typed\n")
        finally:
            os.close(master)
            os.close(slave)

    run(False, body)


def test_runwasm_run_forwards_its_stdin() -> None:
    cat = str(e.wasm("cat.wasm"))
    p = subprocess.run([RUNWASM, "run", cat], input=b"hi\n", capture_output=True, timeout=60, check=False)
    assert (p.returncode, p.stdout) == (0, b"hi\n"), p.stderr.decode()
    p = subprocess.run([RUNWASM, "run", cat], stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    assert (p.returncode, p.stdout) == (0, b""), p.stderr.decode()
