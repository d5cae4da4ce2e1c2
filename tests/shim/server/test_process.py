"""Proc.wait_ready: the workload's reported error keeps its meaning (status) across the channel."""

from __future__ import annotations

import asyncio

import pytest

from runwasm.oci import control
from runwasm.shim.common.errors import NOT_FOUND, UNKNOWN, UnavailableError, to_status
from runwasm.shim.server.process import Proc, WorkloadSetupError
from runwasm.shim.server.stdio import StdioPaths


class _OddError(Exception):
    """An error class the shim has never heard of, carrying a status."""

    status = "not_found"


def _reported(err: BaseException) -> WorkloadSetupError:
    async def main() -> WorkloadSetupError:
        ours, theirs = control.socketpair()
        ours.setblocking(False)
        control.report_error(theirs.fileno(), err)
        theirs.close()
        proc = Proc("c1", "", 1, StdioPaths(), ours)
        with pytest.raises(WorkloadSetupError) as info:
            await proc.wait_ready(timeout=5)
        proc.close_control()
        return info.value

    return asyncio.run(main())


def test_reported_status_is_used_for_unknown_error_classes() -> None:
    err = _reported(_OddError("module '/x.wasm' not found in the rootfs"))
    code, message = to_status(err)
    assert code == NOT_FOUND
    assert "module '/x.wasm' not found in the rootfs" in message


def test_an_error_without_status_maps_to_unknown() -> None:
    assert to_status(_reported(RuntimeError("boom")))[0] == UNKNOWN


def test_a_workload_whose_exit_came_first_is_unavailable_not_an_assertion() -> None:
    async def main() -> None:
        ours, theirs = control.socketpair()
        ours.setblocking(False)
        theirs.close()
        proc = Proc("c1", "", 1, StdioPaths(), ours)
        proc.on_exit(139, 1)  # the reaper delivered the exit as soon as the pid was watched
        with pytest.raises(UnavailableError, match="container 'c1': workload exited during set-up with status 139"):
            await proc.wait_ready(timeout=5)

    asyncio.run(main())


def test_a_set_up_error_is_reported_even_when_the_exit_was_reaped_first() -> None:
    """A workload that reports a set-up error exits at once; its exit may be delivered before
    wait_ready reads the error. The error (and its status code) must still be what Create says."""
    async def main() -> None:
        ours, theirs = control.socketpair()
        ours.setblocking(False)
        control.send(theirs, {"type": "error", "kind": "InvalidModuleError", "status": "invalid_argument",
                              "message": "failed to load module '/x.wasm': not wasm"})
        theirs.close()
        proc = Proc("c1", "", 1, StdioPaths(), ours)
        proc.on_exit(1, 1)  # reaped before the error was read
        with pytest.raises(WorkloadSetupError, match="not wasm") as err:
            await proc.wait_ready(timeout=5)
        assert err.value.status == "invalid_argument"
        assert proc.control is None  # closed once read

    asyncio.run(main())
