"""Thin Starlette endpoints for the v2 protocol: decode, one data-plane call, encode.

Health (``/v2/health/live``, ``/v2/health/ready``: no model data, answered to anyone who
reaches the port), server and model metadata, inference (JSON, binary extension,
classification extension), the model repository extension (``POST /v2/repository/index``,
``.../models/{name}/load``, ``.../unload``) and statistics (``GET /v2/models/stats``,
``/v2/models/{name}[/versions/{version}]/stats``), all through
:class:`~blindai.server.protocols.v2.service.OipService`.

Every error is a non-200 reply with a JSON body ``{"error": "...", "type": "InvalidInput"}``
(``type``: the error's class in :mod:`blindai.errors`, also in the ``X-BlindAI-Error``
header), its status taken from that class (400 malformed request or mismatch with the model,
404 unknown model, 413 body over ``max_request_bytes``, 422 inference failure). Nothing from
the request body is logged.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from blindai.errors import InvalidInput
from blindai.server import _json
from blindai.server._text import clipped, limit
from blindai.server.access import Principal
from blindai.server.access.middleware import caller_of
from blindai.server.dataplane import DataPlane
from blindai.server.protocols._http import (
    client_gone,
    error_replies,
    read_body,
    single_header,
)
from blindai.server.protocols.v2.codec import (
    HEADER_LENGTH,
    check_reply_size,
    encode_response,
    parse_request,
)
from blindai.server.protocols.v2.service import (
    EXTENSIONS,
    RESULT_OUTPUT,
    OipService,
    Wanted,
    audited_model,
)
from blindai.server.registry import ModelEntry
from blindai.server.statistics import Timing

__all__ = ["EXTENSIONS", "OFFLOAD_BYTES", "RESULT_OUTPUT", "V2Routes", "json_error"]

OFFLOAD_BYTES = 1 << 16
"""Bodies at least this large are parsed and encoded in a worker thread, off the event loop."""
_P = ParamSpec("_P")
_T = TypeVar("_T")


def _json_response(obj: Any, status: int = 200) -> Response:
    """A JSON reply (NaN and infinities written as Python's json writes them)."""
    return Response(json.dumps(obj, separators=(",", ":")), status, media_type="application/json")


def json_error(message: str, status: int, error_type: str) -> Response:
    """A v2 error reply: ``{"error": message, "type": error_type}``."""
    return _json_response({"error": message, "type": error_type}, status)


#: v2 routes: ``{"error": ..., "type": ...}``
_json_errors = error_replies(json_error)


class V2Routes:
    """Health, metadata, inference, repository and statistics endpoints."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.oip = OipService(plane)
        most = plane.settings.max_request_bytes
        self._refusal = f"the request body is over {limit(most, 'max_request_bytes')}"
        self.live = _json_errors(self._live)
        self.ready = _json_errors(self._ready)
        self.server_metadata = _json_errors(self._server_metadata)
        self.metadata = _json_errors(self._metadata)
        self.model_ready = _json_errors(self._model_ready)
        self.infer = _json_errors(self._infer)
        self.index = _json_errors(self._index)
        self.load = _json_errors(self._load)
        self.unload = _json_errors(self._unload)
        self.stats = _json_errors(self._stats)

    def routes(self) -> list[Route]:
        """The v2 routes for the attested app."""
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        repository = "/v2/repository/models/{name}"
        return [
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2/models/stats", self.stats, methods=["GET"]),
            *(Route(p, self.metadata, methods=["GET"]) for p in (model, versioned)),
            *(Route(f"{p}/ready", self.model_ready, methods=["GET"]) for p in (model, versioned)),
            *(Route(f"{p}/infer", self.infer, methods=["POST"]) for p in (model, versioned)),
            *(Route(f"{p}/stats", self.stats, methods=["GET"]) for p in (model, versioned)),
            Route("/v2/repository/index", self.index, methods=["POST"]),
            Route(f"{repository}/load", self.load, methods=["POST"]),
            Route(f"{repository}/unload", self.unload, methods=["POST"]),
            Route("/v2/{rest:path}", self.unsupported, methods=["GET", "POST", "PUT", "DELETE"]),
        ]

    async def unsupported(self, request: Request) -> Response:
        """Other v2 paths (shared memory, tracing, logging, ...): a JSON 404."""
        return _json_response({"error": clipped(f"{request.url.path} is not supported here")}, 404)

    @staticmethod
    def _key(request: Request) -> tuple[str, str]:
        return request.path_params["name"], request.path_params.get("version", "")

    async def _work(
        self, big: bool, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """``fn`` in a worker for a large body, else right here."""
        return await self.plane.offload(fn, *args, **kwargs) if big else fn(*args, **kwargs)

    async def _live(self, request: Request) -> Response:
        return _json_response({"live": True})

    async def _ready(self, request: Request) -> Response:
        """Ready once the replica holds the models it must hold; 400 (not ready) until then.
        How many it misses is said on an open server only: this route needs no key, and the
        figure counts the tenants' models (the admin key reads ``blindai_models_loaded``)."""
        missing = self.oip.missing_models()
        if missing and self.plane.settings.admin_key_sha256 is not None:
            return _json_response({"ready": False}, 400)
        if missing:
            return _json_response({"ready": False, "missing_models": missing}, 400)
        return _json_response({"ready": True})

    async def _server_metadata(self, _: Request) -> Response:
        return _json_response(self.oip.server_metadata())

    async def _metadata(self, request: Request) -> Response:
        caller = caller_of(request.scope)
        request.state.model_id = self.oip.model(*self._key(request), caller=caller).model_id
        return _json_response(self.oip.model_metadata(*self._key(request), caller=caller))

    async def _model_ready(self, request: Request) -> Response:
        name, version = self._key(request)
        caller = caller_of(request.scope)
        request.state.model_id = self.oip.model(name, version, caller=caller).model_id
        ready = self.oip.is_ready(name, version, caller=caller)
        # Triton answers a model that is not ready with 400 (tritonclient reads the status)
        return _json_response({"name": name, "ready": ready}, 200 if ready else 400)

    async def _small_json(self, request: Request) -> dict[str, Any]:
        body = await read_body(request, 1 << 16, "the request body is over 64 KiB")
        try:
            doc = _json.loads(body) if body.strip() else {}
        except ValueError as exc:
            raise InvalidInput("the request body is not valid JSON") from exc
        if not isinstance(doc, dict):
            raise InvalidInput("the request body must be a JSON object")
        return doc

    async def _index(self, request: Request) -> Response:
        ready = (await self._small_json(request)).get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInput("ready must be a boolean")
        return _json_response(self.oip.index(ready_only=ready, caller=caller_of(request.scope)))

    async def _load(self, request: Request) -> Response:
        await self._small_json(request)
        caller = caller_of(request.scope)
        versions = self.oip.managed(request.path_params["name"], caller=caller)
        request.state.model_id = audited_model(versions)
        await self.oip.load(versions, caller=caller)
        return _json_response({})

    async def _unload(self, request: Request) -> Response:
        await self._small_json(request)
        versions = self.oip.managed(request.path_params["name"], caller=caller_of(request.scope))
        request.state.model_id = audited_model(versions)
        self.oip.unload(versions)
        return _json_response({})

    async def _stats(self, request: Request) -> Response:
        name = request.path_params.get("name", "")
        version = request.path_params.get("version", "")
        caller = caller_of(request.scope)
        found, request.state.model_id = self.oip.statistics(name, version, caller=caller)
        return _json_response(found)

    async def _infer(self, request: Request) -> Response:
        timing = Timing()
        caller = caller_of(request.scope)
        entry = self.oip.ready_model(*self._key(request), caller=caller)
        request.state.model_id = entry.model_id
        try:
            response = await self._run(request, entry, caller, timing)
        except Exception:
            self.oip.record(entry, timing, success=False, protocol="rest", caller=caller)
            raise
        self.oip.record(entry, timing, success=True, protocol="rest", caller=caller)
        return response

    async def _run(
        self, request: Request, entry: ModelEntry, caller: Principal, timing: Timing
    ) -> Response:
        json_length = single_header(request, HEADER_LENGTH)
        body = await read_body(request, self.plane.settings.max_request_bytes, self._refusal)
        big = len(body) >= OFFLOAD_BYTES
        with timing.phase("decode"):
            parsed = await self._work(big, parse_request, body, json_length)
        wanted = None
        if parsed.outputs is not None:
            wanted = [Wanted(o.name, o.classification) for o in parsed.outputs]
        gone = functools.partial(client_gone, request)
        outputs = await self.oip.infer(
            entry, parsed.inputs, wanted, timing, caller=caller, disconnected=gone
        )
        check_reply_size(parsed, outputs, limit=self.plane.settings.max_response_bytes)
        big = big or sum(a.nbytes for _, a in outputs) >= OFFLOAD_BYTES
        with timing.phase("encode"):
            reply, head = await self._work(
                big,
                encode_response,
                parsed,
                outputs,
                model_name=entry.label,
                model_version=str(entry.version),
            )
        if head is None:
            return Response(reply, media_type="application/json")
        return Response(
            reply, media_type="application/octet-stream", headers={HEADER_LENGTH: str(head)}
        )
