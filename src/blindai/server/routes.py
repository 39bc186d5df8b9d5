"""Thin HTTP endpoints for the BlindAI 0.6 protocol over the data plane (CBOR in and out)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from blindai.errors import BlindAIError, ProtocolError
from blindai.pipeline.bundle import Pipeline
from blindai.pipeline.compiled import InputKind
from blindai.protocol import codec
from blindai.server.errors import message_for, status_for
from blindai.server.handlers import DataPlane, PayloadTooLarge, output_tensors

__all__ = ["BlindAIRoutes", "cbor_errors", "cbor_response", "error_replies", "read_body"]

_log = logging.getLogger("blindai.server")
CBOR = "application/cbor"


def cbor_response(obj: Any, status: int = 200) -> Response:
    """A CBOR-encoded response."""
    return Response(codec.dumps(obj), status_code=status, media_type=CBOR)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"body of {declared} bytes is over the {limit}-byte limit", status_code=413
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the {limit}-byte limit", status_code=413)
        chunks.append(chunk)
    return b"".join(chunks)


Endpoint = Callable[[Request], Awaitable[Response]]


def error_replies(render: Callable[[str, int], Response]) -> Callable[[Endpoint], Endpoint]:
    """Turn errors into a 4xx/5xx made by ``render(message, status)``.

    A BlindAI error keeps its status and short message; anything else is a bug, answered with
    a 500 and logged by exception type only (never request data).
    """

    def decorate(endpoint: Endpoint) -> Endpoint:
        async def wrapped(request: Request) -> Response:
            try:
                return await endpoint(request)
            except BlindAIError as exc:
                status = status_for(exc)
                if status >= 500:
                    _log.error("%s failed: %s", request.url.path, type(exc).__name__)
                return render(message_for(exc), status)
            except Exception as exc:
                _log.error("%s failed unexpectedly: %s", request.url.path, type(exc).__name__)
                return render("internal server error", 500)

        return wrapped

    return decorate


#: 0.6 routes: a CBOR text message
cbor_errors = error_replies(cbor_response)


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{key} must be a string")
    return value


_RAW_KEYS: tuple[InputKind, ...] = ("text", "image", "audio")


def _raw_input(body: dict[str, Any]) -> tuple[InputKind, bytes | str] | None:
    """A pipeline's raw input (``text``: a string, ``image``/``audio``: bytes), if the
    request carries one instead of ``inputs``."""
    given = [k for k in _RAW_KEYS if body.get(k) is not None]
    if not given:
        return None
    if len(given) > 1 or body.get("inputs") is not None:
        raise ProtocolError("give one of inputs, text, image and audio")
    kind = given[0]
    value = body[kind]
    if kind == "text" and not isinstance(value, str):
        raise ProtocolError("text must be a string")
    if kind != "text" and not isinstance(value, bytes):
        raise ProtocolError(f"{kind} must be a byte string (the file's bytes)")
    return kind, value


class BlindAIRoutes:
    """The 0.6 endpoints /upload, /run and /delete."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        settings = plane.settings
        # an int array takes up to 2 bytes a byte on the wire
        self._upload_limit = 2 * settings.max_model_bytes + settings.max_pipeline_bytes + (1 << 20)
        self._run_limit = settings.max_request_bytes
        self.upload = cbor_errors(self._upload)
        self.run = cbor_errors(self._run)
        self.delete = cbor_errors(self._delete)

    async def _upload(self, request: Request) -> Response:
        body = codec.decode_map(await read_body(request, self._upload_limit), what="upload")
        model = codec.model_bytes(body.get("model"))
        name = body.get("model_name")
        if name is not None and not isinstance(name, str):
            raise ProtocolError("model_name must be a string or null")
        optimize = body.get("optimize", True)
        if not isinstance(optimize, bool):
            raise ProtocolError("optimize must be a boolean")
        pipeline = None
        if body.get("pipeline") is not None:
            limits = self.plane.settings.pipeline_limits()
            pipeline = Pipeline.from_wire(body["pipeline"], limits=limits)
        entry = await self.plane.upload(
            model, name=name or None, optimize=optimize, pipeline=pipeline
        )
        request.state.model_id = entry.model_id
        return cbor_response({"model_id": entry.model_id, "hash": entry.hash})

    async def _run(self, request: Request) -> Response:
        body = codec.decode_map(await read_body(request, self._run_limit), what="run")
        model_id, model_hash = _text(body, "model_id"), _text(body, "model_hash")
        if bool(model_id) == bool(model_hash):
            raise ProtocolError("give exactly one of model_id and model_hash")
        entry = self.plane.registry.get(model_id=model_id, model_hash=model_hash)
        request.state.model_id = entry.model_id
        raw = _raw_input(body)
        if raw is not None:
            result, outputs = await self.plane.run_raw(entry, *raw)
            if result is not None:
                return cbor_response({"result": result.to_wire()})
            return cbor_response({"outputs": output_tensors(outputs)})
        tensors = codec.decode_tensors(body.get("inputs"), what="inputs")
        feeds = self.plane.run_wire(entry, tensors)
        outputs = await self.plane.run(entry, feeds)
        return cbor_response({"outputs": output_tensors(outputs)})

    async def _delete(self, request: Request) -> Response:
        body = codec.decode_map(await read_body(request, 1 << 16), what="delete")
        model_id = _text(body, "model_id")
        if not model_id:
            raise ProtocolError("model_id is required")
        entry = self.plane.registry.delete(model_id)
        request.state.model_id = entry.model_id
        return cbor_response(None)
