"""Through the real shim binary: a Wasm task's bind mounts as preopens (``ro``/``rro`` honoured,
unknown options refused at Create) and ResizePty on a task without a pty (a no-op, as runc)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
from runwasm.shim.harness.driver import Harness
from runwasm.shim.ttrpc.status import Code, RpcError
from tests.shim.e2e import helpers as e
from tests.shim.e2e.helpers import run


def _edit(bundle: Path, **process: object) -> dict[str, object]:
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"].update(process)
    return cfg


@pytest.mark.parametrize(("options", "written"), [(["rbind", "rw"], True), (["rbind", "ro"], False),
                                                  (["rbind", "rro"], False)])
def test_wasm_bind_mount_read_only(legacy: bool, options: list[str], written: bool) -> None:
    shared = Path(tempfile.mkdtemp(prefix="rwpreopen-"))

    async def body(h: Harness) -> None:
        cid = "wr" + "".join(o[0] for o in options)
        bundle = e.make_bundle(h, cid, "writefile.wasm", ["out.txt", "4"])  # fd 4: the first mount preopen
        cfg = _edit(bundle)
        cfg["mounts"] = [*cfg.get("mounts", []),
                         {"destination": "/data", "type": "bind", "source": str(shared), "options": options}]
        (bundle / "config.json").write_text(json.dumps(cfg))
        async with e.shim(h, cid, bundle) as t:
            await e.create(t, cid, bundle)
            await e.start(t, cid)
            status = (await e.wait(t, cid)).exit_status
            await e.delete(t, cid)
            await e.shutdown(t, cid)
        assert (status == 0) is written, status
        assert (shared / "out.txt").exists() is written

    try:
        run(legacy, body)
    finally:
        for f in shared.iterdir():
            f.unlink()
        shared.rmdir()


def test_wasm_bind_mount_option_a_preopen_cannot_honour_fails_create(legacy: bool) -> None:
    async def body(h: Harness) -> None:
        bundle = e.make_bundle(h, "nodev", "hello.wasm")
        cfg = _edit(bundle)
        cfg["mounts"] = [{"destination": "/data", "type": "bind", "source": str(bundle), "options": ["rbind", "nodev"]}]
        (bundle / "config.json").write_text(json.dumps(cfg))
        async with e.shim(h, "nodev", bundle) as t:
            with pytest.raises(RpcError) as info:
                await e.create(t, "nodev", bundle)
            assert info.value.code == Code.INVALID_ARGUMENT
            assert "mounts[0] (destination '/data')" in info.value.message
            assert "'nodev'" in info.value.message
            await e.shutdown(t, "nodev")

    run(legacy, body)


@pytest.mark.parametrize("terminal", [True, False])
def test_resize_pty_without_a_pty_is_a_no_op(legacy: bool, terminal: bool) -> None:
    async def body(h: Harness) -> None:
        cid = f"tty{int(terminal)}"
        bundle = e.make_bundle(h, cid, "sleep.wasm")
        (bundle / "config.json").write_text(json.dumps(_edit(bundle, terminal=terminal)))
        async with e.shim(h, cid, bundle) as t:
            await e.create(t, cid, bundle)
            await e.start(t, cid)
            await t.call("ResizePty", pb.ResizePtyRequest(id=cid, width=80, height=24), empty_pb2.Empty)
            await e.kill(t, cid, 9)
            assert (await e.wait(t, cid)).exit_status == 137
            with pytest.raises(RpcError) as info:  # an unknown exec id is still an error
                await t.call("ResizePty", pb.ResizePtyRequest(id=cid, exec_id="nope", width=1, height=1),
                             empty_pb2.Empty)
            assert info.value.code == Code.NOT_FOUND
            await e.delete(t, cid)
            await e.shutdown(t, cid)
        log = "".join(p.read_text() for p in h.log_files if os.path.exists(p))
        assert "has no terminal" not in log

    run(legacy, body)
