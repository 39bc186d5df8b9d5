"""Thin Starlette endpoints for the v2 protocol over the shared data plane.

Every error is a non-200 reply with a JSON body ``{"error": "..."}``, its status taken from the
server's one status table (400 malformed request or mismatch with the model, 404 unknown model,
413 body over ``max_request_bytes``, 422 inference failure). Nothing from the request body is
logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio.to_thread
import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import blindai
from blindai.errors import ModelNotFound, ProtocolError
from blindai.pipeline.compiled import InputKind
from blindai.server.handlers import DataPlane, match_inputs
from blindai.server.registry import ModelEntry
from blindai.server.routes import error_replies, read_body
from blindai.server.runtime import TensorSpec
from blindai.server.v2.codec import HEADER_LENGTH, encode_response, parse_request
from blindai.server.v2.datatypes import datatype_for

__all__ = ["V2Routes", "v2_routes"]

_log = logging.getLogger("blindai.server")
Endpoint = Callable[[Request], Awaitable[Response]]
EXTENSIONS = ["binary_tensor_data"]
OFFLOAD_BYTES = 1 << 16
"""Bodies at least this large are parsed and encoded in a worker thread, off the event loop."""
T = TypeVar("T")


async def _maybe_offload(big: bool, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    if not big:
        return fn(*args, **kwargs)
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


def json_response(obj: Any, status: int = 200) -> Response:
    """A JSON reply (NaN and infinities written as Python's json writes them)."""
    return Response(json.dumps(obj, separators=(",", ":")), status, media_type="application/json")


def _json_error(message: str, status: int) -> Response:
    return json_response({"error": message}, status)


#: v2 routes: ``{"error": ...}``
json_errors = error_replies(_json_error)


def _describe(spec: TensorSpec) -> dict[str, object]:
    return {
        "name": spec.name,
        "datatype": datatype_for(spec.dtype, spec.onnx_type),
        "shape": [-1 if d is None else d for d in spec.shape],
    }


RESULT_OUTPUT = "result"
"""The BYTES output holding a pipeline's result as JSON text."""


def _raw_input(
    entry: ModelEntry, inputs: list[tuple[str, np.ndarray]]
) -> tuple[InputKind, bytes] | None:
    """The raw text/image/audio of a pipeline request: one BYTES input named after the
    pipeline's input kind (``text``, ``image`` or ``audio``) holding one element."""
    pipe = entry.pipeline
    if pipe is None or len(inputs) != 1 or inputs[0][0] != pipe.input_kind:
        return None
    name, array = inputs[0]
    if array.dtype != object or array.size != 1:
        raise ProtocolError(f"input {name!r}: one BYTES element (the raw {name}) is expected")
    value = array.reshape(-1)[0]
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return pipe.input_kind, raw


class V2Routes:
    """Health, metadata and inference endpoints; models are addressed by id or name."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.live = json_errors(self._live)
        self.server_metadata = json_errors(self._server_metadata)
        self.metadata = json_errors(self._metadata)
        self.model_ready = json_errors(self._model_ready)
        self.infer = json_errors(self._infer)

    async def unsupported(self, request: Request) -> Response:
        """Other v2 paths (repository, statistics, shared memory, ...): a JSON 404."""
        return json_response({"error": f"{request.url.path} is not supported here"}, 404)

    def _entry(self, request: Request) -> ModelEntry:
        name = request.path_params["name"]
        entry = self.plane.registry.get(model_id=name)
        version = request.path_params.get("version")
        if version is not None and version != entry.model_id:
            raise ModelNotFound(
                f"model {name!r} has no version {version!r} (its version is its id)",
                status_code=404,
            )
        request.state.model_id = entry.model_id
        return entry

    async def _live(self, request: Request) -> Response:
        key = "ready" if request.url.path.endswith("ready") else "live"
        return json_response({key: True})

    async def _server_metadata(self, _: Request) -> Response:
        return json_response(
            {"name": "blindai", "version": blindai.__version__, "extensions": EXTENSIONS}
        )

    async def _metadata(self, request: Request) -> Response:
        entry = self._entry(request)
        return json_response({
            "name": entry.name or entry.model_id,
            "versions": [entry.model_id],
            "platform": "onnxruntime_onnx",
            "inputs": [_describe(s) for s in entry.model.inputs],
            "outputs": [_describe(s) for s in entry.model.outputs],
        })  # fmt: skip

    async def _model_ready(self, request: Request) -> Response:
        entry = self._entry(request)
        return json_response({"name": entry.name or entry.model_id, "ready": True})

    async def _infer(self, request: Request) -> Response:
        entry = self._entry(request)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise ProtocolError(f"Content-Encoding {encoding!r} is not supported")
        body = await read_body(request, self.plane.settings.max_request_bytes)
        big = len(body) >= OFFLOAD_BYTES
        parsed = await _maybe_offload(big, parse_request, body, request.headers.get(HEADER_LENGTH))
        raw = _raw_input(entry, parsed.inputs)
        if raw is not None:
            result, outputs = await self.plane.run_raw(entry, *raw)
            if result is not None:
                text = json.dumps(result.to_wire(), separators=(",", ":"))
                outputs = [(RESULT_OUTPUT, np.array([text.encode()], dtype=object))]
        else:
            known = {s.name for s in entry.model.outputs}
            unknown = [o.name for o in parsed.outputs or () if o.name not in known]
            if unknown:
                raise ProtocolError(
                    f"the model has no output(s) {unknown}; outputs: {sorted(known)}"
                )
            feeds = match_inputs(entry.model.inputs, parsed.inputs)
            outputs = await self.plane.run(entry, feeds)
        big = big or sum(a.nbytes for _, a in outputs) >= OFFLOAD_BYTES
        name = entry.name or entry.model_id
        reply, head = await _maybe_offload(
            big, encode_response, parsed, outputs, model_name=name, model_version=entry.model_id
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
