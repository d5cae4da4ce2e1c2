"""Runtime options through the real shim: on start (bootstrap extension / legacy stdin) and Create."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runwasm.shim.harness.driver import Harness, run_task, runtime_options
from runwasm.shim.ttrpc.status import Code, RpcError
from tests.shim.e2e import helpers as e


def test_start_options_select_the_compile_cache(legacy: bool, tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    async def body(h: Harness) -> None:
        b = e.make_bundle(h, "o1", "hello.wasm")
        r, w = os.pipe()
        try:
            res = await run_task(h, "o1", b, stdout=w, options=runtime_options(config_body=f'WasmCacheDir = "{cache}"'))
        finally:
            os.close(w)
        assert os.read(r, 100) == b"hello from wasm\n"
        os.close(r)
        assert res.exit_status == 0

    e.run(legacy, body)
    assert any(cache.rglob("*")), "the compile cache named in the runtime options stayed empty"


def test_bad_start_options_fail_start_with_the_reason(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        b = e.make_bundle(h, "o2", "hello.wasm")
        with pytest.raises(RuntimeError, match=r"unknown keys in runtime options config_body: \['Nope'\]"):
            await h.shim_start("o2", b, runtime_options(config_body="Nope = 1"))

    e.run(legacy, body)


def test_create_options_are_checked(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        b = e.make_bundle(h, "o3", "hello.wasm")
        async with e.shim(h, "o3", b) as t:
            from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb

            with pytest.raises(RpcError) as info:
                await t.call("Create", pb.CreateTaskRequest(
                    id="o3", bundle=str(b), options=runtime_options(config_body='Executor = "gpu"')),
                    pb.CreateTaskResponse)
            assert info.value.code == Code.INVALID_ARGUMENT
            assert "invalid Executor" in info.value.message
            await e.shutdown(t, "o3")

    e.run(legacy, body)
