"""The 0.6 endpoints ``/upload``, ``/run`` and ``/delete``: decode, one data-plane call, encode.

Errors answer with a CBOR text message (what the original clients display) and the error's
class in the ``X-BlindAI-Error`` header. Every ``/run`` on a model counts in its statistics
(those the Open Inference Protocol reports) and in the phase metrics, as protocol ``v06``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from blindai.errors import InvalidInput, PayloadTooLarge
from blindai.server._text import limit
from blindai.server.dataplane import DataPlane
from blindai.server.protocols._http import error_replies, read_body
from blindai.server.protocols.v06.upload import receive_upload
from blindai.server.protocols.v06.wire import (
    Run,
    cbor_response,
    decode_delete,
    decode_run,
    decode_upload,
    outputs_response,
    upload_from_fields,
)
from blindai.server.registry import ModelRef
from blindai.server.statistics import Timing

__all__ = ["DELETE_BYTES", "PROTOCOL", "V06Routes", "cbor_errors"]

DELETE_BYTES = 1 << 16
"""A delete request is a model id: its body needs no more."""

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
        self._run_refusal = (
            f"the request body is over {limit(settings.max_request_bytes, 'max_request_bytes')}"
        )
        self.upload = cbor_errors(self._upload)
        self.run = cbor_errors(self._run)
        self.delete = cbor_errors(self._delete)

    async def _upload(self, request: Request) -> Response:
        settings = self.plane.settings
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self._upload_bytes:
            raise PayloadTooLarge(self._upload_refusal)
        got = await receive_upload(
            request.stream(),
            check_model_size=self.plane.check_model_size,
            max_body_bytes=self._upload_bytes,
            max_field_bytes=settings.max_pipeline_bytes + (1 << 20),
            refusal=self._upload_refusal,
            open_model=self.plane.model_file,
            write=self.plane.write_model,
        )
        limits = settings.pipeline_limits()
        try:
            if got.body is not None:
                upload = decode_upload(got.body, limits=limits)
            elif got.model is None:
                raise InvalidInput("model must be a byte string or an array of byte values")
            else:
                upload = upload_from_fields(got.fields, got.model, limits=limits)
            entry = await self.plane.upload(
                upload.model,
                name=upload.name,
                optimize=upload.optimize,
                pipeline=upload.pipeline,
                settings=upload.settings,
            )
        except BaseException:
            if got.model is not None:
                got.model.close()  # refused: its bytes go now
            raise
        request.state.model_id = entry.model_id
        return cbor_response({"model_id": entry.model_id, "hash": entry.hash})

    async def _run(self, request: Request) -> Response:
        body = await read_body(request, self._run_bytes, self._run_refusal)
        timing = Timing()
        with timing.phase("decode"):
            run = decode_run(body)
        entry = self.plane.model(run.ref)
        request.state.model_id = entry.model_id
        try:
            response = await self._inference(run, ModelRef(key=entry.model_id), timing)
        except Exception:
            self.plane.record(entry, timing, success=False, protocol=PROTOCOL)
            raise
        self.plane.record(entry, timing, success=True, protocol=PROTOCOL)
        return response

    async def _inference(self, run: Run, ref: ModelRef, timing: Timing) -> Response:
        if run.raw is not None:
            result = await self.plane.infer_raw(ref, *run.raw, timing=timing)
        else:
            result = await self.plane.infer(ref, run.inputs, reshape_flat=True, timing=timing)
        with timing.phase("encode"):
            if result.result is not None:
                return cbor_response({"result": result.result.to_wire()})
            return outputs_response(result.outputs)

    async def _delete(self, request: Request) -> Response:
        body = await read_body(request, DELETE_BYTES, "a delete request is over 64 KiB")
        entry = self.plane.delete(decode_delete(body))
        request.state.model_id = entry.model_id
        return cbor_response(None)
