"""Thin ttrpc adapters over ``SandboxService`` (``containerd.runtime.sandbox.v1.Sandbox``): decode,
call, encode; errors mapped to codes once here (``shim/common/errors.py``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from runwasm.shim.api.runtime.sandbox.v1 import sandbox_pb2 as pb
from runwasm.shim.api.types import metrics_pb2, platform_pb2
from runwasm.shim.common.errors import UNKNOWN, to_status
from runwasm.shim.common.tracing import rpc_span
from runwasm.shim.server import events_factory as ev
from runwasm.shim.server.sandbox import SandboxService
from runwasm.shim.ttrpc.server import Handler, RequestContext
from runwasm.shim.ttrpc.status import Code, RpcError

log = logging.getLogger(__name__)

SERVICE = "containerd.runtime.sandbox.v1.Sandbox"
SPEC_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Spec"  # typeurl's name for specs.Spec (JSON)


class SandboxRpc:
    def __init__(self, service: SandboxService) -> None:
        self.s = service

    async def CreateSandbox(self, r: pb.CreateSandboxRequest) -> Message:
        options = (r.options.type_url, r.options.value) if r.HasField("options") else None
        self.s.create(r.sandbox_id, r.bundle_path, r.netns_path, options, dict(r.annotations), len(r.rootfs))
        return pb.CreateSandboxResponse()

    async def StartSandbox(self, r: pb.StartSandboxRequest) -> Message:
        pid, created_ns, spec = await self.s.start(r.sandbox_id)
        return pb.StartSandboxResponse(pid=pid, created_at=ev.timestamp(created_ns),
                                       spec=any_pb2.Any(type_url=SPEC_TYPE, value=json.dumps(spec).encode()))

    async def Platform(self, r: pb.PlatformRequest) -> Message:
        os_, arch, variant = self.s.platform(r.sandbox_id)
        return pb.PlatformResponse(platform=platform_pb2.Platform(os=os_, architecture=arch, variant=variant))

    async def StopSandbox(self, r: pb.StopSandboxRequest) -> Message:
        await self.s.stop(r.sandbox_id, r.timeout_secs)
        return pb.StopSandboxResponse()

    async def WaitSandbox(self, r: pb.WaitSandboxRequest) -> Message:
        status, exited_ns = await self.s.wait(r.sandbox_id)
        return pb.WaitSandboxResponse(exit_status=status, exited_at=ev.timestamp(exited_ns))

    async def SandboxStatus(self, r: pb.SandboxStatusRequest) -> Message:
        sb, state, info = self.s.status(r.sandbox_id, r.verbose)
        return pb.SandboxStatusResponse(sandbox_id=sb.id, pid=sb.pid, state=state, info=info,
                                        created_at=ev.timestamp(sb.created_at_ns),
                                        exited_at=ev.timestamp(sb.exited_at_ns))

    async def PingSandbox(self, r: pb.PingRequest) -> Message:
        self.s.ping(r.sandbox_id)
        return pb.PingResponse()

    async def ShutdownSandbox(self, r: pb.ShutdownSandboxRequest) -> Message:
        await self.s.shutdown(r.sandbox_id)
        return pb.ShutdownSandboxResponse()

    async def SandboxMetrics(self, r: pb.SandboxMetricsRequest) -> Message:
        import time

        type_url, value = self.s.metrics(r.sandbox_id)
        return pb.SandboxMetricsResponse(metrics=metrics_pb2.Metric(
            timestamp=ev.timestamp(time.time_ns()), id=r.sandbox_id,
            data=any_pb2.Any(type_url=type_url, value=value)))


def _adapter(rpc: SandboxRpc, method: str, in_cls: type[Message], namespace: str) -> Handler:
    impl: Callable[[Any], Awaitable[Message]] = getattr(rpc, method)

    async def handle(payload: bytes, ctx: RequestContext) -> bytes:
        try:
            req: Any = in_cls.FromString(payload)
        except DecodeError as err:
            raise RpcError(Code.INVALID_ARGUMENT, f"failed to decode {in_cls.DESCRIPTOR.full_name}: {err}") from err
        sid = req.sandbox_id
        with rpc_span(ctx.service, method, ctx.metadata, sid, namespace, "") as span:
            log.debug("%s %s", method, sid)
            try:
                return (await impl(req)).SerializeToString()
            except Exception as err:
                if isinstance(err, RpcError):
                    code, message = int(err.code), err.message
                else:
                    code, message = to_status(err)
                span.fail(code, Code(code).name, message)
                if code == UNKNOWN:
                    log.error("%s %s failed: code=%s", method, sid, Code(code).name, exc_info=err)
                else:
                    log.warning("%s %s failed: code=%s: %s", method, sid, Code(code).name, message)
                if isinstance(err, RpcError):
                    raise
                raise RpcError(Code(code), message) from err

    return handle


def handlers(rpc: SandboxRpc, namespace: str) -> dict[tuple[str, str], Handler]:
    desc = pb.DESCRIPTOR.services_by_name["Sandbox"]
    return {(SERVICE, m.name): _adapter(rpc, m.name, getattr(pb, m.input_type.name), namespace)
            for m in desc.methods}
