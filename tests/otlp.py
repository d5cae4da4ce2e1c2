"""Real OTLP receivers for the tests: gRPC (TraceService + MetricsService from opentelemetry-proto's
generated code, served by grpcio) and http/protobuf (``runwasm.shim.harness.otlp_receiver.HttpReceiver``).

Both record into ``Collected``; ``env()`` is the standard environment that points an exporter
(the shim's, containerd's) at the receiver.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any

from runwasm.shim.harness.otlp_receiver import Collected, HttpReceiver, SpanRecord

__all__ = ["Collected", "GrpcReceiver", "HttpReceiver", "SpanRecord", "receiver"]


class GrpcReceiver:
    """OTLP/gRPC on 127.0.0.1 (an ephemeral port), plaintext."""

    def __init__(self) -> None:
        import grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as msvc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as mgrpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tsvc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tgrpc

        self.collected = Collected()
        collected = self.collected

        class Traces(tgrpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - generated name
                collected.add_traces(request)
                return tsvc.ExportTraceServiceResponse()

        class Metrics(mgrpc.MetricsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - generated name
                collected.add_metrics(request)
                return msvc.ExportMetricsServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        tgrpc.add_TraceServiceServicer_to_server(Traces(), self._server)
        mgrpc.add_MetricsServiceServicer_to_server(Metrics(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_INSECURE": "true"}

    def __enter__(self) -> GrpcReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)


def receiver(protocol: str) -> GrpcReceiver | HttpReceiver:
    return GrpcReceiver() if protocol == "grpc" else HttpReceiver()
