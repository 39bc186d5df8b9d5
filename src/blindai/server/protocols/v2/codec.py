"""Inference requests and responses of the Open Inference Protocol v2, JSON and binary.

A request body is a JSON object, optionally followed by binary blobs (the binary tensor
extension): the ``Inference-Header-Content-Length`` header gives the JSON's length, and each
binary input's ``parameters.binary_data_size`` the length of its blob, in input order. A
reply carries an output as binary when the request asked for it (``parameters.binary_data`` on
the requested output, else the request's ``parameters.binary_data_output``).

Parsing checks structure, datatypes, shapes and sizes (InvalidInput, 400); matching the
inputs against the model is the data plane's job. A requested output may ask for the
classification extension (``parameters.classification``: top-k). Shared memory is not
supported and is refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blindai.errors import InvalidInput
from blindai.server import _json, run_guard
from blindai.server._shown import shown
from blindai.server._text import count
from blindai.server.protocols._http import header_int
from blindai.server.protocols.classification import classification_count
from blindai.server.protocols.v2.datatypes import datatype_for, dtype_for
from blindai.server.protocols.v2.tensors import (
    StringCount,
    array_from_binary,
    array_from_json,
    array_to_binary,
    array_to_json,
)

__all__ = [
    "HEADER_LENGTH",
    "MAX_ELEMENTS",
    "MAX_RANK",
    "InferRequest",
    "RequestedOutput",
    "check_reply_size",
    "encode_response",
    "parse_request",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_RANK = 32
MAX_ELEMENTS = 1 << 48
"""Bounds on shapes (even empty ones), so that numpy never overflows its sizes."""
_UNSUPPORTED = frozenset(
    ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
)


@dataclass(frozen=True)
class RequestedOutput:
    """One output the client asked for, and whether it wants it as binary data."""

    name: str
    binary: bool
    classification: int | None = None
    """The classification extension's top-k count, when asked for."""


@dataclass(frozen=True)
class InferRequest:
    """A parsed inference request: named input arrays, the outputs asked for, the id."""

    id: str | None
    inputs: list[tuple[str, np.ndarray]]
    outputs: list[RequestedOutput] | None
    """None when the request listed no outputs (then every output is returned)."""
    binary_output: bool
    """The request's ``binary_data_output``: the default for outputs not saying otherwise."""


def _object(value: object, label: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{label} must be a JSON object")
    return value


def _parameters(obj: Mapping[str, Any], label: str) -> dict[str, Any]:
    params = obj.get("parameters")
    return {} if params is None else _object(params, f"{label} parameters")


def _flag(params: Mapping[str, Any], key: str, label: str) -> bool | None:
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"{label}: parameter {key} must be a boolean")
    return value


def _shape(value: object, label: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise InvalidInput(f"{label}: shape must be a list of non-negative integers")
    if len(value) > MAX_RANK:
        raise InvalidInput(f"{label}: shape has {len(value)} dimensions, more than {MAX_RANK}")
    if math.prod(filter(None, value)) > MAX_ELEMENTS:  # the non-zero dimensions
        raise InvalidInput(f"{label}: shape {value} is larger than this server handles")
    return tuple(value)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    cut = header_int(header_length)
    if cut is None or cut > len(body):
        raise InvalidInput(f"{HEADER_LENGTH} must be an integer no larger than the body")
    return body[:cut], memoryview(body)[cut:]


def _load_json(raw: bytes, header_length: str | None) -> dict[str, Any]:
    try:
        doc = _json.loads_request(raw)
    except _json.TooManyTensors as exc:
        raise InvalidInput(str(exc)) from None
    except ValueError as exc:  # UnicodeDecodeError is one; so is nesting too deep
        hint = ""
        if header_length is None and isinstance(exc, json.JSONDecodeError) and exc.pos > 0:
            hint = f" (binary data after the JSON needs the {HEADER_LENGTH} header)"
        raise InvalidInput(f"the request is not valid JSON{hint}") from exc
    return _object(doc, "the request")


class _Blobs:
    """The binary section, handed out in order."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._offset = 0

    def take(self, size: object, label: str) -> memoryview:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"{label}: binary_data_size must be a non-negative integer")
        end = self._offset + size
        if end > len(self._data):
            raise InvalidInput(
                f"{label}: binary_data_size {size} runs past the end of the binary data"
            )
        blob, self._offset = self._data[self._offset : end], end
        return blob

    def finish(self) -> None:
        left = len(self._data) - self._offset
        if left:
            raise InvalidInput(
                f"{count(left, 'byte')} of binary data belong{'s' if left == 1 else ''} to no input"
            )


def _input(obj: object, index: int, blobs: _Blobs, strings: StringCount) -> tuple[str, np.ndarray]:
    tensor = _object(obj, f"inputs[{index}]")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{index}]: name must be a non-empty string")
    label = f"input {shown(name)}"
    dtype = dtype_for(tensor.get("datatype"))
    shape = _shape(tensor.get("shape"), label)
    params = _parameters(tensor, label)
    if not params.keys().isdisjoint(_UNSUPPORTED):
        raise InvalidInput(f"{label}: shared memory is not supported")
    has_data = "data" in tensor
    strings.take(dtype, shape, label)
    if ("binary_data_size" in params) == has_data:
        raise InvalidInput(f"{label}: give exactly one of data and parameters.binary_data_size")
    if has_data:
        return name, array_from_json(tensor["data"], dtype, shape, label)
    blob = blobs.take(params["binary_data_size"], label)
    return name, array_from_binary(blob, dtype, shape, label)


def _outputs(value: object, default: bool) -> list[RequestedOutput] | None:
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise InvalidInput("outputs must be a list")
    if len(value) > _json.MAX_TENSORS:
        raise InvalidInput(str(_json.TooManyTensors(len(value), "outputs")))
    found: list[RequestedOutput] = []
    for i, obj in enumerate(value):
        tensor = _object(obj, f"outputs[{i}]")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"outputs[{i}]: name must be a non-empty string")
        params = _parameters(tensor, f"output {shown(name)}")
        if not params.keys().isdisjoint(_UNSUPPORTED):
            raise InvalidInput(f"output {shown(name)}: shared memory is not supported")
        binary = _flag(params, "binary_data", f"output {shown(name)}")
        top_k = classification_count(params.get("classification"), name)
        found.append(RequestedOutput(name, default if binary is None else binary, top_k))
    names = [o.name for o in found]
    if len(set(names)) != len(names):
        raise InvalidInput("an output is requested twice")
    return found


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse an inference request body (with the value of its JSON-length header, if any)."""
    head, binary = _split(body, header_length)
    doc = _load_json(head, header_length)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("id must be a string")
    default = _flag(_parameters(doc, "the request"), "binary_data_output", "the request")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs must be a non-empty list")
    if len(inputs) > _json.MAX_TENSORS:  # read by the standard library (NaN tokens, ...)
        raise InvalidInput(str(_json.TooManyTensors(len(inputs))))
    blobs, strings = _Blobs(binary), StringCount()
    arrays = [_input(obj, i, blobs, strings) for i, obj in enumerate(inputs)]
    blobs.finish()
    outputs = _outputs(doc.get("outputs"), bool(default))
    return InferRequest(request_id, arrays, outputs, bool(default))


def _selected(
    request: InferRequest, outputs: Sequence[tuple[str, np.ndarray]]
) -> list[tuple[str, np.ndarray, bool]]:
    """Each output with whether to send it as binary; ``outputs`` are those asked for, in order."""
    if request.outputs is None:
        return [(name, array, request.binary_output) for name, array in outputs]
    binary = {o.name: o.binary for o in request.outputs}
    return [(name, array, binary[name]) for name, array in outputs]


def check_reply_size(
    request: InferRequest, outputs: Sequence[tuple[str, np.ndarray]], *, limit: int
) -> None:
    """InferenceFailed when the reply would pass ``limit`` bytes, computed from the outputs'
    shapes and dtypes before anything is encoded (an upper bound for JSON data)."""
    binary = {name: flag for name, _, flag in _selected(request, outputs)}
    run_guard.check_reply_size(outputs, limit=limit, as_json=lambda name: not binary[name])


def encode_response(
    request: InferRequest,
    outputs: Sequence[tuple[str, np.ndarray]],
    *,
    model_name: str,
    model_version: str,
) -> tuple[bytes, int | None]:
    """The reply body, and the JSON's length when binary blobs follow it (else None)."""
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    arrays: list[np.ndarray] = []
    for name, array, binary in _selected(request, outputs):
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": datatype_for(array.dtype),
            "shape": list(array.shape),
        }
        if binary:
            blob = array_to_binary(array)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            data = array_to_json(array, name)
            if isinstance(data, np.ndarray):
                arrays.append(data)
            tensor["data"] = data
        tensors.append(tensor)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = tensors
    head = _json.dumps(doc, arrays=arrays)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)
