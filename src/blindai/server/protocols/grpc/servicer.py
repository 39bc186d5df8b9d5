"""``GRPCInferenceService`` over :class:`~blindai.server.v2.service.OipService`.

Implemented: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer,
ModelStatistics, RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload. The other calls
of Triton's service (streaming, model config, shared memory, tracing, logging) answer
``UNIMPLEMENTED``. Errors map to status codes through :func:`grpc_code` (400 ->
INVALID_ARGUMENT, 404 -> NOT_FOUND, 413 -> RESOURCE_EXHAUSTED, 503 -> UNAVAILABLE, ...), with
the same short message the REST routes send (its status from the error's class); nothing from
a request is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format

from blindai.errors import BlindAIError, ModelNotFound, ServerError
from blindai.server.metrics import Metrics
from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb
from blindai.server.protocols.grpc._generated import grpc_service_pb2_grpc as pb_grpc
from blindai.server.protocols.grpc.tensors import decode, encode
from blindai.server.protocols.v2.service import OipService, Wanted
from blindai.server.statistics import Timing

__all__ = ["GRPC_PORT", "InferenceServicer", "grpc_code"]

GRPC_PORT = "grpc"
"""The ``port`` label of the gRPC port's message bytes (``blindai_received_bytes_total``, ...)."""

_log = logging.getLogger("blindai.server")
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_Req = TypeVar("_Req")
_Rep = TypeVar("_Rep")
_Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC status code for an HTTP status (INTERNAL for anything unlisted)."""
    return _CODES.get(status, grpc.StatusCode.INTERNAL)


def _guarded(method: str, metrics: Metrics, fn: _Handler) -> _Handler:
    """Errors become a status code and a short message; every call and its message bytes
    (serialized request and reply) are counted."""

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        metrics.received_bytes.labels(GRPC_PORT).inc(request.ByteSize())
        try:
            reply = await fn(request, context)
            metrics.sent_bytes.labels(GRPC_PORT).inc(reply.ByteSize())
            return reply
        except BlindAIError as exc:
            status = exc.http_status
            code = grpc_code(status)
            if status >= 500:
                _log.error("gRPC %s failed: %s", method, type(exc).__name__)
            await context.abort(code, exc.message if isinstance(exc, ServerError) else str(exc))
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code = grpc.StatusCode.INTERNAL
            _log.error("gRPC %s failed unexpectedly: %s", method, type(exc).__name__)
            await context.abort(code, "internal server error")
        finally:
            metrics.grpc_requests.labels(method, code.name).inc()
            metrics.grpc_seconds.labels(method).observe(time.perf_counter() - start)

    return call


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The Open Inference Protocol's gRPC service on one :class:`OipService`."""

    def __init__(self, oip: OipService) -> None:
        self.oip = oip
        metrics = oip.plane.metrics
        for method in (
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelInfer",
            "ModelStatistics",
            "RepositoryIndex",
            "RepositoryModelLoad",
            "RepositoryModelUnload",
        ):
            setattr(self, method, _guarded(method, metrics, getattr(self, f"_{method}")))

    async def _ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def _ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.oip.missing_models() == 0)

    async def _ModelReady(self, request: Any, context: Any) -> Any:
        try:
            ready = self.oip.is_ready(request.name, request.version)
        except ModelNotFound:
            ready = False  # as Triton: an unknown model is not ready
        return pb.ModelReadyResponse(ready=ready)

    async def _ServerMetadata(self, request: Any, context: Any) -> Any:
        return json_format.ParseDict(self.oip.server_metadata(), pb.ServerMetadataResponse())

    async def _ModelMetadata(self, request: Any, context: Any) -> Any:
        found = self.oip.model_metadata(request.name, request.version)
        return json_format.ParseDict(found, pb.ModelMetadataResponse())

    async def _ModelInfer(self, request: Any, context: Any) -> Any:
        timing = Timing()
        entry = self.oip.ready_model(request.model_name, request.model_version)
        try:
            with timing.phase("decode"):
                decoded = decode(request)
            wanted = None
            if decoded.outputs is not None:
                wanted = [Wanted(o.name, o.classification) for o in decoded.outputs]
            outputs = await self.oip.infer(entry, decoded.inputs, wanted, timing)
            with timing.phase("encode"):
                reply = encode(
                    decoded, outputs, model_name=entry.label, model_version=str(entry.version)
                )
        except Exception:
            self.oip.record(entry, timing, success=False, protocol="grpc")
            raise
        self.oip.record(entry, timing, success=True, protocol="grpc")
        return reply

    async def _ModelStatistics(self, request: Any, context: Any) -> Any:
        found = self.oip.statistics(request.name, request.version)
        return json_format.ParseDict(found, pb.ModelStatisticsResponse())

    async def _RepositoryIndex(self, request: Any, context: Any) -> Any:
        rows = self.oip.index(ready_only=request.ready)
        return json_format.ParseDict({"models": rows}, pb.RepositoryIndexResponse())

    async def _RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        await self.oip.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def _RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        self.oip.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()
