"""Out-of-range numbers get InvalidArgument naming the field, with no traceback in the shim log
(through the real shim binary, the harness as containerd)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runwasm.shim.harness.driver import Harness
from runwasm.shim.ttrpc.status import Code, RpcError
from tests.shim.e2e import helpers as e
from tests.shim.e2e.helpers import run


def _spec(args: list[str], **extra: Any) -> dict[str, Any]:
    linux = extra.pop("linux", None)
    doc: dict[str, Any] = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                           "process": {"args": args, "cwd": "/", "env": ["PATH=/bin"], **extra}}
    if linux is not None:
        doc["linux"] = linux
    return doc


WASM, ELF = ["/hello.wasm"], ["/bin/true"]


@pytest.mark.parametrize(("config", "needle"), [
    (_spec(WASM, user={"uid": -1, "gid": 0}), "process.user.uid: expected an integer in 0..4294967294, got -1"),
    (_spec(ELF, user={"uid": -1, "gid": 0}), "process.user.uid: expected an integer in 0..4294967294, got -1"),
    (_spec(WASM, user={"uid": 2**40, "gid": 0}), f"process.user.uid: expected an integer in 0..4294967294, got {2**40}"),
    (_spec(ELF, user={"uid": 0, "gid": 2**40}), f"process.user.gid: expected an integer in 0..4294967294, got {2**40}"),
    (_spec(WASM, user={"uid": 0, "gid": 0, "additionalGids": [5, -3]}), "process.user.additionalGids[1]"),
    (_spec(WASM, oomScoreAdj=-1001), "process.oomScoreAdj: expected an integer in -1000..1000, got -1001"),
    (_spec(WASM, rlimits=[{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]), "process.rlimits[0].soft"),
    (_spec(WASM, linux={"resources": {"memory": {"limit": -5}}}),
     "linux.resources.memory.limit: expected an integer in -1..9223372036854775807 (-1 = unlimited), got -5"),
    (_spec(ELF, linux={"resources": {"pids": {"limit": 2**63}}}), "linux.resources.pids.limit"),
    ("[" * 100_000 + "]" * 100_000, "config.json"),
], ids=["wasm-uid-minus-1", "linux-uid-minus-1", "wasm-uid-2^40", "linux-gid-2^40", "additional-gid",
        "oom-score-adj", "rlimit-soft-over-hard", "memory-limit-minus-5", "pids-over-int64", "deep-json"])
def test_create_refuses_out_of_range_numbers(config: dict[str, Any] | str, needle: str) -> None:
    async def body(h: Harness) -> None:
        files = {"hello.wasm": e.wasm("hello.wasm").read_bytes()}
        bundle = e.raw_bundle(h, "num", config, files)
        async with e.shim(h, "num", bundle) as t:
            with pytest.raises(RpcError) as err:
                await e.create(t, "num", bundle)
            assert err.value.code == Code.INVALID_ARGUMENT, err.value.message
            assert needle in err.value.message
            if isinstance(config, str):
                assert str(bundle / "config.json") in err.value.message
                assert "nested too deeply" in err.value.message
            await e.shutdown(t, "num")
        await asyncio.sleep(0.2)  # let the harness drain the log FIFO
        log = (bundle / "shim.log").read_text()
        assert "Traceback" not in log

    run(False, body)


@pytest.mark.parametrize("sig", [65, 999, 2**31])
def test_kill_with_a_bad_signal_number_is_invalid_argument(sig: int) -> None:
    async def body(h: Harness) -> None:
        bundle = e.make_bundle(h, "ks", "sleep.wasm")
        async with e.shim(h, "ks", bundle) as t:
            io = e.stdio(h, "ks")
            await e.create(t, "ks", bundle, io)
            waiter = asyncio.create_task(e.wait(t, "ks"))
            await e.start(t, "ks")
            await io.wait_output("sleeping\n")
            with pytest.raises(RpcError) as err:
                await e.kill(t, "ks", sig)
            assert err.value.code == Code.INVALID_ARGUMENT, err.value.message
            assert f"signal {sig}" in err.value.message
            assert "0..64" in err.value.message
            await e.kill(t, "ks", 9)  # the task is untouched and still killable
            assert (await asyncio.wait_for(waiter, 15)).exit_status == 137
            await io.finish()
            await e.delete(t, "ks")
            await e.shutdown(t, "ks")
        await asyncio.sleep(0.2)
        assert "Traceback" not in (bundle / "shim.log").read_text()

    run(False, body)
