"""Thin Starlette endpoints for the v2 protocol: decode, one data-plane call, encode.

Every error is a non-200 reply with a JSON body ``{"error": "...", "type": "InvalidInput"}``
(``type``: the error's class in :mod:`blindai.errors`, also in the ``X-BlindAI-Error``
header), its status taken from that class (400 malformed request or mismatch with the model,
404 unknown model, 413 body over ``max_request_bytes``, 422 inference failure). Nothing from
the request body is logged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from blindai._version import __version__
from blindai.errors import InvalidInput
from blindai.server._text import limit
from blindai.server.dataplane import DataPlane
from blindai.server.protocols._http import error_replies, read_body
from blindai.server.protocols.v2.codec import HEADER_LENGTH, encode_response, parse_request
from blindai.server.protocols.v2.datatypes import datatype_for
from blindai.server.registry import ModelEntry, ModelRef
from blindai.server.runtime import TensorSpec

__all__ = ["EXTENSIONS", "OFFLOAD_BYTES", "RESULT_OUTPUT", "V2Routes", "v2_routes"]

EXTENSIONS = ["binary_tensor_data"]
OFFLOAD_BYTES = 1 << 16
"""Bodies at least this large are parsed and encoded in a worker thread, off the event loop."""
_P = ParamSpec("_P")
_T = TypeVar("_T")


def _json_response(obj: Any, status: int = 200) -> Response:
    """A JSON reply (NaN and infinities written as Python's json writes them)."""
    return Response(json.dumps(obj, separators=(",", ":")), status, media_type="application/json")


def _json_error(message: str, status: int, error_type: str) -> Response:
    return _json_response({"error": message, "type": error_type}, status)


#: v2 routes: ``{"error": ..., "type": ...}``
_json_errors = error_replies(_json_error)


def _describe(spec: TensorSpec) -> dict[str, object]:
    return {
        "name": spec.name,
        "datatype": datatype_for(spec.dtype, spec.onnx_type),
        "shape": [-1 if d is None else d for d in spec.shape],
    }


RESULT_OUTPUT = "result"
"""The BYTES output holding a pipeline's result as JSON text."""


def _ref(request: Request) -> ModelRef:
    return ModelRef(key=request.path_params["name"], version=request.path_params.get("version"))


class V2Routes:
    """Health, metadata and inference endpoints; models are addressed by id or name."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        most = plane.settings.max_request_bytes
        self._refusal = f"the request body is over {limit(most, 'max_request_bytes')}"
        self.live = _json_errors(self._live)
        self.server_metadata = _json_errors(self._server_metadata)
        self.metadata = _json_errors(self._metadata)
        self.model_ready = _json_errors(self._model_ready)
        self.infer = _json_errors(self._infer)

    async def unsupported(self, request: Request) -> Response:
        """Other v2 paths (repository, statistics, shared memory, ...): a JSON 404."""
        return _json_response({"error": f"{request.url.path} is not supported here"}, 404)

    def _entry(self, request: Request) -> ModelEntry:
        entry = self.plane.model(_ref(request))
        request.state.model_id = entry.model_id
        return entry

    async def _work(
        self, big: bool, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """``fn`` in a worker for a large body, else right here."""
        return await self.plane.offload(fn, *args, **kwargs) if big else fn(*args, **kwargs)

    async def _live(self, request: Request) -> Response:
        key = "ready" if request.url.path.endswith("ready") else "live"
        return _json_response({key: True})

    async def _server_metadata(self, _: Request) -> Response:
        return _json_response({"name": "blindai", "version": __version__, "extensions": EXTENSIONS})

    async def _metadata(self, request: Request) -> Response:
        entry = self._entry(request)
        return _json_response({
            "name": entry.name or entry.model_id,
            "versions": [entry.model_id],
            "platform": "onnxruntime_onnx",
            "inputs": [_describe(s) for s in entry.model.inputs],
            "outputs": [_describe(s) for s in entry.model.outputs],
        })  # fmt: skip

    async def _model_ready(self, request: Request) -> Response:
        entry = self._entry(request)
        return _json_response({"name": entry.name or entry.model_id, "ready": True})

    async def _infer(self, request: Request) -> Response:
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise InvalidInput(f"Content-Encoding {encoding!r} is not supported")
        body = await read_body(request, self.plane.settings.max_request_bytes, self._refusal)
        big = len(body) >= OFFLOAD_BYTES
        parsed = await self._work(big, parse_request, body, request.headers.get(HEADER_LENGTH))
        wanted = None if parsed.outputs is None else [o.name for o in parsed.outputs]
        result = await self.plane.infer(_ref(request), parsed.inputs, outputs=wanted)
        entry = result.entry
        request.state.model_id = entry.model_id
        outputs = result.outputs
        if result.result is not None:  # a pipeline's typed result, as JSON text
            text = json.dumps(result.result.to_wire(), separators=(",", ":"))
            outputs = [(RESULT_OUTPUT, np.array([text.encode()], dtype=object))]
        name = entry.name or entry.model_id
        big = big or sum(a.nbytes for _, a in outputs) >= OFFLOAD_BYTES
        reply, head = await self._work(
            big,
            encode_response,
            parsed,
            outputs,
            model_name=name,
            model_version=entry.model_id,
        )
        if head is None:
            return Response(reply, media_type="application/json")
        return Response(
            reply, media_type="application/octet-stream", headers={HEADER_LENGTH: str(head)}
        )


def v2_routes(plane: DataPlane) -> list[Route]:
    """The v2 routes for the attested app."""
    v2 = V2Routes(plane)
    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    return [
        Route("/v2", v2.server_metadata, methods=["GET"]),
        Route("/v2/health/live", v2.live, methods=["GET"]),
        Route("/v2/health/ready", v2.live, methods=["GET"]),
        *(Route(p, v2.metadata, methods=["GET"]) for p in (model, versioned)),
        *(Route(f"{p}/ready", v2.model_ready, methods=["GET"]) for p in (model, versioned)),
        *(Route(f"{p}/infer", v2.infer, methods=["POST"]) for p in (model, versioned)),
        Route("/v2/{rest:path}", v2.unsupported, methods=["GET", "POST", "PUT", "DELETE"]),
    ]
