"""Seeded mutations of gRPC inference and repository messages, field by field.

Protobuf keeps each field to its type, so most byte mutations of a serialized message only
reach the protobuf parser; these mutations change what the server's own checks read: shapes
(negative, zero, huge dimensions), datatypes, names, raw contents (cut, grown, BYTES length
prefixes claiming more than there is), typed contents beside raw ones, parameters
(classification counts, shared memory), versions, and many inputs.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

from tests.integration._mutate import MARKER

__all__ = ["mutate_message"]

_DIMS = [0, 1, 2, 3, -1, 2**31, 2**32, 2**48, 2**62, 2**63 - 1, -(2**63), 7, 1000]
_DATATYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
    "FP32", "FP64", "BF16", "BYTES", "", "fp32", "FP8", "STRING", "\u0000", MARKER,
]  # fmt: skip
_NAMES = ["", "x", "y", "x\x00", "\u202ex", "\ud7ff", MARKER, "a" * 5000, "xx", "image"]


def _inputs_mutation(message: Any, r: random.Random) -> list[Callable[[], None]]:
    if not message.inputs:
        return []
    tensor = message.inputs[r.randrange(len(message.inputs))]
    raw = message.raw_input_contents

    def shape() -> None:
        del tensor.shape[:]
        tensor.shape.extend(r.choice(_DIMS) for _ in range(r.choice((0, 1, 2, 3, 40))))

    def dim() -> None:
        if tensor.shape:
            tensor.shape[r.randrange(len(tensor.shape))] = r.choice(_DIMS)

    def blob() -> None:
        if raw:
            data = raw[0]
            raw[0] = r.choice(
                (data[: r.randrange(len(data) + 1)], data + data, data + b"\x00",
                 struct.pack("<I", r.choice((2**31, 2**32 - 1, len(data)))) + data, b"")
            )  # fmt: skip

    def typed_too() -> None:
        tensor.contents.int64_contents.extend([1, -(2**63), 2**63 - 1])

    def contents_field() -> None:
        field = r.choice(("bool_contents", "int_contents", "uint64_contents", "fp64_contents"))
        values = {
            "bool_contents": [True] * 6,
            "int_contents": [-(2**31)] * 6,
            "uint64_contents": [2**64 - 1] * 6,
            "fp64_contents": [float("nan")] * 6,
        }
        getattr(tensor.contents, field).extend(values[field])  # fmt: skip

    def bytes_counts() -> None:
        tensor.datatype = "BYTES"
        if raw:
            raw[0] = struct.pack("<I", 0) * r.choice((1, 1000, 2**16))

    def more_inputs() -> None:
        for _ in range(r.choice((1, 2, 5000))):
            message.inputs.add().CopyFrom(tensor)
        if raw and r.random() < 0.5:
            raw.append(raw[0])

    def drop_raw() -> None:
        del raw[:]

    def parameter() -> None:
        key = r.choice(("shared_memory_region", "binary_data_size", "classification", MARKER))
        tensor.parameters[key].int64_param = r.choice(_DIMS)

    return [
        shape, dim, blob, typed_too, contents_field, bytes_counts, more_inputs, drop_raw,
        parameter,
        lambda: setattr(tensor, "datatype", r.choice(_DATATYPES)),
        lambda: setattr(tensor, "name", r.choice(_NAMES)),
    ]  # fmt: skip


def _outputs_mutation(message: Any, r: random.Random) -> list[Callable[[], None]]:
    def classification() -> None:
        out = message.outputs[0] if message.outputs else message.outputs.add(name="y")
        param = out.parameters["classification"]
        if r.random() < 0.7:
            param.int64_param = r.choice((0, 1, 2, 3, -1, 2**63 - 1, 2**31))
        else:
            param.string_param = r.choice(("2", MARKER))

    def outputs() -> None:
        for name in r.choice((["y", "y"], [""], [MARKER], ["y"] * 5000, ["x"])):
            message.outputs.add(name=name)

    return [classification, outputs]


def mutate_message(message: Any, rng: random.Random) -> Any:
    """A mutated copy of ``message`` (one or two field mutations)."""
    copy = type(message)()
    copy.CopyFrom(message)
    choices: list[Callable[[], None]] = []
    models = ["fz-load"]  # a repository call never names the models the other cases run
    if hasattr(copy, "inputs"):
        models = ["fz-f32", "fz-str", "fz-img"]
        choices += _inputs_mutation(copy, rng) + _outputs_mutation(copy, rng)
        choices.append(lambda: setattr(copy, "id", rng.choice(_NAMES)))
    fields = copy.DESCRIPTOR.fields_by_name
    for field in ("model_name", "name"):
        if field in fields:
            choices.append(lambda f=field: setattr(copy, f, rng.choice([*_NAMES, *models])))
    versions = ("", "1", "2", "0", "-1", "99999999999999999999", MARKER)
    for field in ("model_version", "version"):
        if field in fields:
            choices.append(lambda f=field: setattr(copy, f, rng.choice(versions)))
    if "ready" in fields:
        choices.append(lambda: setattr(copy, "ready", not copy.ready))
    for _ in range(rng.choice((1, 1, 2))):
        rng.choice(choices)()
    return copy
