"""Console: the server's copy loop between a pty master and containerd's stdio FIFOs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from runwasm.shim.common.errors import InvalidArgumentError
from runwasm.shim.server.console import Console
from runwasm.shim.server.stdio import StdioPaths


def _open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def test_bad_stdin_path_leaks_no_fd(tmp_path: Path) -> None:
    """The Console owns the master from the start: on a failed open it closes it and whatever it
    had opened already (the stdout FIFO), so a failed Exec/Create leaks nothing in the server."""
    async def body() -> None:
        before = _open_fds()
        master, slave = os.openpty()
        try:
            with pytest.raises(InvalidArgumentError, match="missing-stdin"):
                Console(master, StdioPaths(stdin=str(tmp_path / "missing-stdin"), stdout=f"file://{tmp_path / 'out'}",
                                           terminal=True))
        finally:
            os.close(slave)
        assert _open_fds() - before == set()

    asyncio.run(body())


def test_copies_output_to_stdout(tmp_path: Path) -> None:
    async def body() -> None:
        master, slave = os.openpty()
        c = Console(master, StdioPaths(stdout=f"file://{tmp_path / 'out'}", terminal=True))
        os.write(slave, b"hi\n")
        os.close(slave)
        for _ in range(200):
            if c.closed:
                break
            await asyncio.sleep(0.01)
        assert c.closed
        assert (tmp_path / "out").read_bytes() == b"hi\r\n"

    asyncio.run(body())
