"""The 0.6 endpoints ``/upload``, ``/run`` and ``/delete``: decode, one data-plane call, encode.

Errors answer with a CBOR text message (what the original clients display) and the error's
class in the ``X-BlindAI-Error`` header. Every ``/run`` on a model counts in its statistics
(those the Open Inference Protocol reports) and in the phase metrics, as protocol ``v06``.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from blindai.errors import InvalidInput, PayloadTooLarge
from blindai.protocol import codec
from blindai.server._text import limit
from blindai.server.access import Principal
from blindai.server.access.middleware import caller_of
from blindai.server.cbor_body import CborLimits, ModelSink, TooManyItems, decode, read_upload
from blindai.server.dataplane import DataPlane
from blindai.server.model_file import ModelFile
from blindai.server.protocols._http import (
    client_gone,
    declared_over,
    error_replies,
    read_body,
    refuse_encoded,
)
from blindai.server.protocols.v06.wire import (
    Run,
    cbor_response,
    decode_delete,
    outputs_response,
    run_from_map,
    upload_from_map,
)
from blindai.server.registry import ModelEntry
from blindai.server.statistics import Timing

__all__ = [
    "DELETE_BYTES",
    "ON_LOOP_BODY",
    "ON_LOOP_ITEMS",
    "PROTOCOL",
    "SMALL_BODY",
    "V06Routes",
    "cbor_errors",
]

DELETE_BYTES = 1 << 16
"""A delete request is a model id: its body needs no more."""
_CBOR_MAP = 5
"""CBOR's major type of a map (a body's first byte, its top three bits)."""
SMALL_BODY = 16 << 10
"""/run bodies up to this size are decoded by cbor2 on the event loop (a few microseconds);
larger ones by the bounded decoder (``blindai.server.cbor_body``)."""
ON_LOOP_BODY = 1 << 20
ON_LOOP_ITEMS = 256
"""A /run body of at most ``ON_LOOP_BODY`` bytes and ``ON_LOOP_ITEMS`` items (an image, a few
tensors) is decoded on the event loop: that takes tens of microseconds (its byte strings are
copied once), less than a trip to a worker thread. A larger one, or one with more items, is
decoded in a worker thread, so that no body holds up the other requests for long."""

_UNDECODED = object()

PROTOCOL = "v06"
"""``/run``'s label in the inference phase metrics (v2 REST is ``rest``, gRPC ``grpc``)."""


def _cbor_error(message: str, status: int, error_type: str) -> Response:
    del error_type  # in the header
    return cbor_response(message, status)


#: 0.6 routes: a CBOR text message
cbor_errors = error_replies(_cbor_error)


class V06Routes:
    """The endpoints, over one data plane."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        settings = plane.settings
        # an int array takes up to 2 bytes a byte on the wire
        self._upload_bytes = 2 * settings.max_model_bytes + settings.max_pipeline_bytes + (1 << 20)
        self._upload_refusal = (
            f"the upload is larger than a model within "
            f"{limit(settings.max_model_bytes, 'max_model_bytes')} can be"
        )
        self._run_bytes = settings.max_request_bytes
        # a pipeline's text may be as long as max_text_bytes; other text fields are short
        text = max(CborLimits.max_text, settings.max_text_bytes)
        self._run_limits = CborLimits(
            max_bytes=self._run_bytes,
            max_text=text,
            setting="max_request_bytes",
            text_setting="max_text_bytes" if text == settings.max_text_bytes else "",
        )
        self._run_refusal = (
            f"the request body is over {limit(settings.max_request_bytes, 'max_request_bytes')}"
        )
        self.upload = cbor_errors(self._upload)
        self.run = cbor_errors(self._run)
        self.delete = cbor_errors(self._delete)

    async def _upload(self, request: Request) -> Response:
        refuse_encoded(request)
        if declared_over(request, self._upload_bytes):
            raise PayloadTooLarge(self._upload_refusal)
        settings = self.plane.settings
        caller = caller_of(request.scope)  # before a byte of the model is written anywhere
        doc = await read_upload(
            request.stream(),
            limits=CborLimits(max_bytes=settings.max_model_bytes, setting="max_model_bytes"),
            max_body=self._upload_bytes,
            field_bytes={"pipeline": settings.max_pipeline_bytes + (1 << 20)},
            into=ModelSink(self.plane.model_file, self.plane.write_model),
        )
        model = doc.get("model")
        try:
            upload = upload_from_map(doc, limits=settings.pipeline_limits())
            entry = await self.plane.upload(
                upload.model,
                name=upload.name,
                optimize=upload.optimize,
                caller=caller,
                public=upload.public,
                pipeline=upload.pipeline,
                settings=upload.settings,
                disconnected=functools.partial(client_gone, request),
            )
        except BaseException:
            if isinstance(model, ModelFile):
                model.close()  # refused: its bytes go now (kept otherwise, to load it again)
            raise
        request.state.model_id = entry.model_id
        return cbor_response({"model_id": entry.model_id, "hash": entry.hash})

    async def _run(self, request: Request) -> Response:
        body = await read_body(request, self._run_bytes, self._run_refusal)
        timing = Timing()
        with timing.phase("decode"):
            run = run_from_map(await self._decoded(body))
        caller = caller_of(request.scope)
        entry = self.plane.model(run.ref, caller=caller)
        request.state.model_id = entry.model_id
        try:
            response = await self._inference(run, entry, caller, timing, request)
        except Exception:
            self.plane.record(entry, timing, success=False, protocol=PROTOCOL, caller=caller)
            raise
        self.plane.record(entry, timing, success=True, protocol=PROTOCOL, caller=caller)
        return response

    async def _inference(
        self, run: Run, entry: ModelEntry, caller: Principal, timing: Timing, request: Request
    ) -> Response:
        """Run the model found by :meth:`DataPlane.model` (not looked up again); the run stops
        if the client goes away."""
        gone = functools.partial(client_gone, request)
        if run.raw is not None:
            result = await self.plane.run_raw(
                entry, *run.raw, caller=caller, timing=timing, disconnected=gone
            )
        else:
            result = await self.plane.run(
                entry,
                run.inputs,
                caller=caller,
                reshape_flat=True,
                timing=timing,
                disconnected=gone,
            )
        with timing.phase("encode"):
            if result.result is not None:
                return cbor_response({"result": result.result.to_wire()})
            return outputs_response(result.outputs)

    async def _decoded(self, body: bytes) -> dict[str, Any]:
        """A /run body as a map: small ones with cbor2, larger ones bounded (on the loop when
        they hold few items, see ``ON_LOOP_ITEMS``)."""
        if len(body) <= SMALL_BODY:
            try:
                return codec.decode_map(body, what="run")
            except Exception as exc:
                raise InvalidInput(str(exc)) from exc
        if body[0] >> 5 != _CBOR_MAP:  # refused before the rest is decoded (30 MB: 5 s)
            raise InvalidInput("run: body must be a CBOR map with text keys")
        limits = self._run_limits
        doc: Any = _UNDECODED
        if len(body) <= ON_LOOP_BODY:
            few = replace(limits, max_items=min(ON_LOOP_ITEMS, limits.max_items))
            with contextlib.suppress(TooManyItems):  # then in a worker, with the real limit
                doc = decode(body, limits=few)
        if doc is _UNDECODED:
            doc = await self.plane.offload(decode, body, limits=limits)
        if not isinstance(doc, dict):
            raise InvalidInput("run: body must be a CBOR map with text keys")
        return doc

    async def _delete(self, request: Request) -> Response:
        body = await read_body(request, DELETE_BYTES, "a delete request is over 64 KiB")
        entry = await self.plane.delete(decode_delete(body), caller=caller_of(request.scope))
        request.state.model_id = entry.model_id
        return cbor_response(None)
