"""Open Inference Protocol v2 (KServe v2) routes on the attested port: health and metadata."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from blindai.errors import BlindAIError
from blindai.server.errors import message_for, status_for
from blindai.server.handlers import DataPlane
from blindai.server.runtime import TensorSpec

__all__ = ["v2_routes"]

_V2_TYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "object": "BYTES",
}


def _describe(spec: TensorSpec) -> dict[str, object]:
    datatype = _V2_TYPES.get(spec.dtype.name, spec.onnx_type) if spec.dtype else spec.onnx_type
    return {
        "name": spec.name,
        "datatype": datatype,
        "shape": [-1 if d is None else d for d in spec.shape],
    }


def v2_routes(plane: DataPlane) -> list[Route]:
    """Health, readiness and model metadata, addressed by model id or name."""

    async def live(_: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(_: Request) -> Response:
        return JSONResponse({"ready": True})

    async def metadata(request: Request) -> Response:
        try:
            entry = plane.registry.get(model_id=request.path_params["name"])
        except BlindAIError as exc:
            return JSONResponse({"error": message_for(exc)}, status_for(exc))
        return JSONResponse(
            {
                "name": entry.name or entry.model_id,
                "versions": [entry.model_id],
                "platform": "onnxruntime_onnx",
                "inputs": [_describe(s) for s in entry.model.inputs],
                "outputs": [_describe(s) for s in entry.model.outputs],
            }
        )

    async def model_ready(request: Request) -> Response:
        try:
            plane.registry.get(model_id=request.path_params["name"])
        except BlindAIError as exc:
            return JSONResponse({"error": message_for(exc)}, status_for(exc))
        return JSONResponse({"name": request.path_params["name"], "ready": True})

    return [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{name}", metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
    ]
