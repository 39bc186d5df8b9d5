"""``GET /models`` and ``POST /export`` on the management port: what ``blindai sync`` reads.

Decode, one data-plane call, encode (wire in :mod:`blindai.protocol.replication`). The list
holds the models the caller's API key may list, their owners by key name. Export is refused
(PermissionDenied, 403) unless the server keeps models' bytes (``--allow-model-export``) and,
with access control, unless the model is the caller's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Send

from blindai.errors import InvalidInput, ProtocolError
from blindai.protocol import codec
from blindai.protocol.replication import (
    EXPORT_PATH,
    MODELS_PATH,
    encode_models,
)
from blindai.server.access import AccessControl
from blindai.server.access.middleware import caller_of
from blindai.server.dataplane import DataPlane
from blindai.server.protocols._http import read_body
from blindai.server.protocols.v06.routes import cbor_errors
from blindai.server.protocols.v06.wire import CBOR
from blindai.server.registry import ModelRef
from blindai.server.replication import EXPORT_CHUNK, ModelExport

__all__ = ["EXPORT_REQUEST_BYTES", "replication_routes"]

_log = logging.getLogger("blindai.server")
EXPORT_REQUEST_BYTES = 1 << 12
"""An export request is a model id: its body needs no more."""


def replication_routes(plane: DataPlane, access: AccessControl) -> list[Route]:
    """The routes, for the management app."""

    async def models(request: Request) -> Response:
        listed = [
            replace(m, owner=access.owner_name(m.owner))
            for m in plane.listed_models(caller=caller_of(request.scope))
        ]
        return Response(encode_models(listed), media_type=CBOR)

    async def export(request: Request) -> Response:
        body = await read_body(request, EXPORT_REQUEST_BYTES, "an export request is over 4 KiB")
        try:
            doc = codec.decode_map(body, what="export")
        except ProtocolError as exc:
            raise InvalidInput(str(exc)) from exc
        model_id = doc.get("model_id")
        if not isinstance(model_id, str) or not model_id:
            raise InvalidInput("model_id (a string) is required")
        exported = plane.export(ModelRef(key=model_id), caller=caller_of(request.scope))
        request.state.model_id = exported.model_id
        return _ExportReply(exported)

    return [
        Route(MODELS_PATH, cbor_errors(models), methods=["GET"]),
        Route(EXPORT_PATH, cbor_errors(export), methods=["POST"]),
    ]


class _Cut(Exception):
    """The model's bytes could not all be read (only the host can shorten its file)."""


class _ExportReply(StreamingResponse):
    """The reply, streamed; when the model's file ends early it stops there, with one log
    line: the client sees a cut body (an ASGI traceback, and an exception out of the app,
    before)."""

    def __init__(self, exported: ModelExport) -> None:
        length = {"content-length": str(exported.length)}
        super().__init__(_pieces(exported), media_type=CBOR, headers=length)
        self._model_id = exported.model_id

    async def stream_response(self, send: Send) -> None:
        """Send what can be read; never the end of a reply cut short."""
        try:
            await super().stream_response(send)
        except _Cut as exc:
            _log.error("export of model %s cut short: %s", self._model_id, exc)


async def _pieces(exported: ModelExport) -> AsyncIterator[bytes]:
    """The reply, the model 1 MiB at a time, read in a worker (TLS encrypts each piece on the
    event loop, between other connections' work)."""
    try:
        yield exported.head
        for offset in range(0, exported.size, EXPORT_CHUNK):
            try:
                piece = await run_in_threadpool(exported.piece, offset)
            except OSError as exc:
                raise _Cut(str(exc)) from None
            yield piece
        yield exported.tail
    finally:
        exported.close()
