"""The 0.6 wire on the server: CBOR request bodies to names and arrays, outputs to CBOR.

Decoding uses :mod:`blindai.protocol.codec` (shared with the client); any problem with a
request becomes :class:`~blindai.errors.InvalidInput` (400).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from blindai.errors import InferenceFailed, InvalidInput, PipelineError, ProtocolError
from blindai.pipeline.bundle import Pipeline
from blindai.pipeline.compiled import InputKind
from blindai.pipeline.limits import PipelineLimits
from blindai.protocol import codec, streaming
from blindai.protocol.messages import WireTensor
from blindai.server._shown import shown
from blindai.server.model_file import ModelFile
from blindai.server.registry import ModelRef
from blindai.server.settings import ModelSettings

__all__ = [
    "CBOR",
    "MAX_NAME",
    "PartsResponse",
    "Run",
    "Upload",
    "cbor_response",
    "decode_delete",
    "decode_run",
    "decode_upload",
    "output_tensors",
    "outputs_response",
    "run_from_map",
    "upload_from_map",
]

CBOR = "application/cbor"


def cbor_response(obj: Any, status: int = 200) -> Response:
    """A CBOR-encoded response."""
    return Response(codec.dumps(obj), status, media_type=CBOR)


class PartsResponse(Response):
    """A 200 CBOR response whose body goes out as the pieces it was encoded in
    (``protocol.streaming.dumps_parts``): a large tensor is written from its array's memory,
    not first copied into one joined body (for a 588 KiB output that copy, into memory not
    touched lately, took about a tenth of the server's CPU for the request)."""

    def __init__(self, parts: list[bytes | memoryview]) -> None:
        self.parts = parts
        length = sum(len(p) for p in parts)  # bytes, and views cast to bytes ("B")
        super().__init__(None, 200, {"content-length": str(length)}, media_type=CBOR)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The head, then each piece as a body message (the last one ends the body)."""
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        last = len(self.parts) - 1
        for i, part in enumerate(self.parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < last})


def outputs_response(outputs: list[tuple[str, np.ndarray]]) -> Response:
    """The ``{"outputs": [...]}`` reply: one cbor2 call when every output is small (bytes),
    else written in pieces around the large outputs' buffers (:class:`PartsResponse`)."""
    tensors = output_tensors(outputs)
    doc = {"outputs": tensors}
    if all(type(t["bytes_data"]) is bytes for t in tensors):
        return Response(cbor2.dumps(doc), 200, media_type=CBOR)
    return PartsResponse(streaming.dumps_parts(doc))


@contextmanager
def _request() -> Iterator[None]:
    try:
        yield
    except (ProtocolError, PipelineError) as exc:
        raise InvalidInput(str(exc)) from exc


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{key} must be a string")
    return value


@dataclass(frozen=True)
class Upload:
    """A decoded ``/upload``: the model's bytes, its optional name, whether to optimise it, the
    pipeline it comes with (if any), and whether every valid API key may run it (our extension
    ``public``)."""

    model: bytes | ModelFile
    name: str | None
    optimize: bool
    pipeline: Pipeline | None = None
    public: bool = False
    settings: ModelSettings | None = None


def decode_upload(body: bytes, *, limits: PipelineLimits) -> Upload:
    """``{model, length?, model_name?, optimize?, pipeline?, public?, settings?}`` from a whole
    body."""
    with _request():
        doc = codec.decode_map(body, what="upload")
    return upload_from_map(doc, limits=limits)


def upload_from_map(doc: dict[str, Any], *, limits: PipelineLimits) -> Upload:
    """``{model, length?, model_name?, optimize?, pipeline?, public?, settings?}`` (decoded,
    or read as it arrived: ``blindai.server.cbor_body.read_upload``, the model then maybe a
    :class:`ModelFile`); ``length``, when sent, must be the size of ``model``; ``pipeline`` is
    held to ``limits``; ``public`` and ``settings`` (our extensions) say who may run the model
    and how it runs."""
    given = doc.get("model")
    model: bytes | ModelFile
    if isinstance(given, ModelFile):  # streamed into the server's file as it arrived
        model = given
    else:
        with _request():
            model = codec.model_bytes(given)
    size = model.size if isinstance(model, ModelFile) else len(model)
    name = _model_name(doc.get("model_name"))
    optimize = doc.get("optimize", True)
    if not isinstance(optimize, bool):
        raise InvalidInput("optimize must be a boolean")
    public = doc.get("public", False)
    if not isinstance(public, bool):
        raise InvalidInput("public must be a boolean")
    length = doc.get("length")
    if length is not None:
        if not isinstance(length, int) or isinstance(length, bool):
            raise InvalidInput("length must be an integer")
        if length != size:
            raise InvalidInput(
                f"length says the model is {length} bytes, but {size} bytes were sent"
            )
    pipeline = None
    if doc.get("pipeline") is not None:
        with _request():
            pipeline = Pipeline.from_wire(doc["pipeline"], limits=limits)
    return Upload(
        model, name or None, optimize, pipeline, public, _model_settings(doc.get("settings"))
    )


MAX_NAME = 256
"""Characters of a model name."""


def _model_name(value: object) -> str | None:
    """The upload's name: printable (it is shown in listings, logs and other callers'
    terminals: a newline or an escape sequence there forged lines), without ``/`` (a v2 URL
    could not name it), at most :data:`MAX_NAME` characters; None for none."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput("model_name must be a string or null")
    if len(value) > MAX_NAME or not value.isprintable() or "/" in value:
        raise InvalidInput(
            f"model_name must be at most {MAX_NAME} printable characters, without '/' "
            "(no control or format characters, no line breaks)"
        )
    return value


def _model_settings(value: object) -> ModelSettings | None:
    """Our extension: ``settings``, a map of :class:`ModelSettings` fields (how the model runs)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput("settings must be a map")
    try:
        return ModelSettings.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise InvalidInput(f"settings: {where}: {first['msg']}") from None


_RAW_KEYS: tuple[InputKind, ...] = ("text", "image", "audio")


@dataclass(frozen=True)
class Run:
    """A decoded ``/run``: the model meant, and its input arrays or one raw input."""

    ref: ModelRef
    inputs: list[tuple[str | None, np.ndarray]]
    raw: tuple[InputKind, bytes | str] | None = None


def _raw_input(doc: dict[str, Any]) -> tuple[InputKind, bytes | str] | None:
    """A pipeline's raw input (``text``: a string, ``image``/``audio``: bytes), if the request
    carries one instead of ``inputs``."""
    given = [k for k in _RAW_KEYS if doc.get(k) is not None]
    if not given:
        return None
    if len(given) > 1 or doc.get("inputs") is not None:
        raise InvalidInput("give one of inputs, text, image and audio")
    kind = given[0]
    value = doc[kind]
    if kind == "text" and not isinstance(value, str):
        raise InvalidInput("text must be a string")
    if kind != "text" and not isinstance(value, bytes):
        raise InvalidInput(f"{kind} must be a byte string (the file's bytes)")
    return kind, value


def decode_run(body: bytes) -> Run:
    """``{model_id?, model_hash?, inputs | text | image | audio}`` from a whole body."""
    with _request():
        doc = codec.decode_map(body, what="run")
    return run_from_map(doc)


def run_from_map(doc: dict[str, Any]) -> Run:
    """``{model_id?, model_hash?, inputs | text | image | audio}``, decoded.

    With neither ``model_id`` nor ``model_hash``, the newest model is meant.
    """
    with _request():
        if not all(isinstance(k, str) for k in doc):
            raise ProtocolError("run: body must be a CBOR map with text keys")
        model_id, model_hash = _text(doc, "model_id"), _text(doc, "model_hash")
        if model_id and model_hash:
            raise InvalidInput("give at most one of model_id and model_hash")
        ref = ModelRef(key=model_id, hash=model_hash)
        raw = _raw_input(doc)
        if raw is not None:
            return Run(ref, [], raw)
        tensors = codec.decode_tensors(doc.get("inputs"), what="inputs")
    return Run(ref, [(t.info.node_name, t.as_numpy()) for t in tensors])


def decode_delete(body: bytes) -> ModelRef:
    """``{model_id}``: an id, or a name (the newest upload with that name)."""
    with _request():
        doc = codec.decode_map(body, what="delete")
    model_id = _text(doc, "model_id")
    if not model_id:
        raise InvalidInput("model_id is required")
    return ModelRef(key=model_id)


def output_tensors(outputs: list[tuple[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Encode outputs for the 0.6 wire (node_name = ONNX output name)."""
    out = []
    for name, array in outputs:
        try:
            out.append(codec.encode_tensor(WireTensor.from_numpy(array, name)))
        except ValueError as exc:
            raise InferenceFailed(
                f"output {shown(name)} has dtype {array.dtype}, which the 0.6 wire cannot carry; "
                "use the v2 protocol"
            ) from exc
    return out
