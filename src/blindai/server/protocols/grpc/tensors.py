"""Tensors of the gRPC ``ModelInfer`` call: protobuf messages to numpy arrays and back.

An input carries its data either in ``raw_input_contents`` (one blob per input, in input order,
laid out as the REST binary extension lays it out: little-endian, C order, BYTES elements each
prefixed by a 4-byte length) or in its typed ``contents`` field (``fp32_contents``,
``int_contents``, ...); a request uses one way for every input, as Triton requires. FP16 and
BF16 have no typed field: they travel raw. Outputs are always returned raw
(``raw_output_contents``), which is what tritonclient reads first.

Every check raises InvalidInput (gRPC ``INVALID_ARGUMENT``): unknown datatype, shape that does
not match the data, integers out of range, a blob of the wrong size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blindai.errors import InvalidInput
from blindai.server._json import MAX_TENSORS, TooManyTensors
from blindai.server._shown import shown
from blindai.server._text import count
from blindai.server.protocols.classification import classification_count
from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb
from blindai.server.protocols.v2.datatypes import datatype_for, dtype_for
from blindai.server.protocols.v2.tensors import StringCount, array_from_binary, array_to_binary

__all__ = ["MAX_ELEMENTS", "MAX_RANK", "GrpcRequest", "RequestedOutput", "decode", "encode"]

MAX_RANK = 32
MAX_ELEMENTS = 1 << 48
"""Bounds on shapes (even empty ones), so that numpy never overflows its sizes."""

# datatype -> the typed contents field holding it
_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = sorted(set(_FIELDS.values()))
# each numeric field's own protobuf type
_FIELD_DTYPES = {
    "bool_contents": np.bool_,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for; ``classification``: its top-k count, if asked."""

    name: str
    classification: int | None = None


@dataclass(frozen=True)
class GrpcRequest:
    """A decoded ``ModelInferRequest``: named input arrays, outputs asked for (None: all)."""

    id: str
    inputs: list[tuple[str, np.ndarray]]
    outputs: list[RequestedOutput] | None


def _parameter(value: Any) -> object:
    """The Python value of an ``InferParameter``."""
    which = value.WhichOneof("parameter_choice")
    return None if which is None else getattr(value, which)


def _shape(dims: Sequence[int], label: str) -> tuple[int, ...]:
    if any(d < 0 for d in dims):
        raise InvalidInput(f"{label}: shape must be a list of non-negative integers")
    if len(dims) > MAX_RANK:
        raise InvalidInput(f"{label}: shape has {len(dims)} dimensions, more than {MAX_RANK}")
    if math.prod(d for d in dims if d) > MAX_ELEMENTS:
        raise InvalidInput(f"{label}: shape {list(dims)} is larger than this server handles")
    return tuple(int(d) for d in dims)


def _from_contents(tensor: Any, dtype: np.dtype[Any], shape: tuple[int, ...], label: str) -> Any:
    field = _FIELDS.get(tensor.datatype)
    if field is None:
        raise InvalidInput(f"{label}: {tensor.datatype} data must be sent in raw_input_contents")
    others = [f for f in _ALL_FIELDS if f != field and len(getattr(tensor.contents, f))]
    if others:
        raise InvalidInput(f"{label}: {tensor.datatype} data cannot be in {others[0]}")
    values = getattr(tensor.contents, field)
    if len(values) != math.prod(shape):
        raise InvalidInput(
            f"{label}: {count(len(values), 'element')} given, shape {list(shape)} needs "
            f"{math.prod(shape)}"
        )
    if dtype.kind == "O":
        try:
            items = [bytes(v).decode("utf-8") for v in values]
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{label}: BYTES elements must be UTF-8 text") from exc
        return np.array(items, dtype=object).reshape(shape)
    raw: np.ndarray = np.fromiter(values, dtype=_FIELD_DTYPES[field], count=len(values))
    if dtype.kind in "iu" and raw.size:
        info = np.iinfo(dtype)
        if int(raw.min()) < info.min or int(raw.max()) > info.max:
            raise InvalidInput(f"{label}: a value is out of range for {dtype}")
    return raw.astype(dtype).reshape(shape)


def _outputs(request: Any) -> list[RequestedOutput] | None:
    if not request.outputs:
        return None
    if len(request.outputs) > MAX_TENSORS:
        raise InvalidInput(str(TooManyTensors(len(request.outputs), "outputs")))
    found = []
    for out in request.outputs:
        if not out.name:
            raise InvalidInput("a requested output has no name")
        params = {k: _parameter(v) for k, v in out.parameters.items()}
        if any(k.startswith("shared_memory") for k in params):
            raise InvalidInput(f"output {shown(out.name)}: shared memory is not supported")
        top_k = classification_count(params.get("classification"), out.name)
        found.append(RequestedOutput(out.name, top_k))
    names = [o.name for o in found]
    if len(set(names)) != len(names):
        raise InvalidInput("an output is requested twice")
    return found


def decode(request: Any) -> GrpcRequest:
    """Check and convert a ``ModelInferRequest``'s inputs and requested outputs."""
    if not request.inputs:
        raise InvalidInput("inputs must be a non-empty list")
    if len(request.inputs) > MAX_TENSORS:
        raise InvalidInput(str(TooManyTensors(len(request.inputs))))
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents holds {count(len(raw), 'blob')} for "
            f"{count(len(request.inputs), 'input')}; "
            "when used, it carries every input"
        )
    arrays, strings = [], StringCount()
    for i, tensor in enumerate(request.inputs):
        if not tensor.name:
            raise InvalidInput(f"inputs[{i}]: name must be a non-empty string")
        label = f"input {shown(tensor.name)}"
        if any(k.startswith("shared_memory") for k in tensor.parameters):
            raise InvalidInput(f"{label}: shared memory is not supported")
        dtype = dtype_for(tensor.datatype)
        shape = _shape(tensor.shape, label)
        strings.take(dtype, shape, label)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(f"{label}: give contents or raw_input_contents, not both")
            array = array_from_binary(memoryview(raw[i]), dtype, shape, label)
        else:
            array = _from_contents(tensor, dtype, shape, label)
        arrays.append((tensor.name, array))
    return GrpcRequest(request.id, arrays, _outputs(request))


def encode(
    request: GrpcRequest,
    outputs: Sequence[tuple[str, np.ndarray]],
    *,
    model_name: str,
    model_version: str,
) -> Any:
    """A ``ModelInferResponse`` carrying ``outputs`` raw, in the order given."""
    reply = pb.ModelInferResponse(model_name=model_name, model_version=model_version)
    reply.id = request.id
    for name, array in outputs:
        tensor = reply.outputs.add(name=name, datatype=datatype_for(array.dtype))
        tensor.shape.extend(array.shape)
        reply.raw_output_contents.append(bytes(array_to_binary(array)))  # protobuf takes bytes
    return reply
