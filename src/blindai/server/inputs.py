"""A request's input arrays matched to a model's inputs, and its output names checked.

:func:`match_inputs` maps named inputs by name (any order) and unnamed ones by position, and
checks each one's dtype and shape against the model's (a flat list is shaped for protocols
that send one); :func:`output_names` checks the outputs a request asks for;
:func:`raw_input` finds a pipeline's raw input given as a tensor. Every refusal is
InvalidInput (400) naming the input and what the model takes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from blindai.errors import InvalidInput
from blindai.server._shown import shown, shown_names
from blindai.server._text import count, were
from blindai.server.registry import ModelEntry
from blindai.server.runtime import TensorSpec

__all__ = ["Inputs", "match_inputs", "output_names", "raw_input"]

Inputs = Sequence[tuple[str | None, np.ndarray]]
"""Input arrays, each with its name (None or "": matched by position)."""


def raw_input(entry: ModelEntry, inputs: Inputs) -> bytes | str | None:
    """A pipeline's raw input given as a tensor: the one input, named after the pipeline's kind
    (``text``, ``image`` or ``audio``), holding one BYTES element; None for model inputs."""
    pipe = entry.pipeline
    if pipe is None or len(inputs) != 1 or inputs[0][0] != pipe.input_kind:
        return None
    name, array = inputs[0]
    if array.dtype != object or array.size != 1:
        raise InvalidInput(f"input {name!r}: one BYTES element (the raw {name}) is expected")
    value = array.reshape(-1)[0]
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def output_names(entry: ModelEntry, outputs: Sequence[str] | None) -> list[str] | None:
    if outputs is None:
        return None
    known = [o.name for o in entry.model.outputs]
    unknown = [name for name in outputs if name not in known]
    if unknown:
        raise InvalidInput(
            f"the model has no output named {shown_names(unknown)[1:-1]}; its outputs: "
            f"{shown_names(known)}"
        )
    return list(outputs)


def _flat_shape(spec: TensorSpec, size: int, label: str) -> tuple[int, ...]:
    """The model's shape for a flat list of ``size`` values; InvalidInput when not one."""
    want = [("?" if d is None else d) for d in spec.shape]
    head, rest = spec.shape[:1], spec.shape[1:]
    if any(d is None for d in rest):
        raise InvalidInput(
            f"input {shown(spec.name)}{label}: a flat list cannot be shaped to the model's {want}, "
            "which has dynamic dimensions after the first; give the shape"
        )
    row = math.prod(d for d in rest if d is not None)
    if head == (None,) and row and size % row == 0:
        return (size // row, *(d for d in rest if d is not None))
    if None not in head and size == math.prod(d for d in spec.shape if d is not None):
        return tuple(d for d in spec.shape if d is not None)
    raise InvalidInput(
        f"input {shown(spec.name)}{label}: {count(size, 'value')} cannot fill the model's "
        f"shape {want}"
    )


def _check(spec: TensorSpec, array: np.ndarray, label: str, reshape_flat: bool) -> np.ndarray:
    if spec.dtype is None:
        raise InvalidInput(f"input {shown(spec.name)} has type {spec.onnx_type}, not supported")
    if array.dtype != spec.dtype:
        raise InvalidInput(
            f"input {shown(spec.name)}{label}: dtype {array.dtype} does not match the model's "
            f"{spec.dtype}"
        )
    if array.dtype == object and not all(isinstance(x, str) for x in array.ravel()):
        raise InvalidInput(f"input {shown(spec.name)}{label}: BYTES elements must be UTF-8 text")
    if spec.accepts_shape(tuple(array.shape)):
        return array
    if reshape_flat and array.ndim == 1:
        return array.reshape(_flat_shape(spec, array.size, label))
    want = ["?" if d is None else d for d in spec.shape]
    raise InvalidInput(
        f"input {shown(spec.name)}{label}: shape {list(array.shape)} does not fit the "
        f"model's {want}"
    )


def match_inputs(
    specs: Sequence[TensorSpec],
    arrays: Inputs,
    *,
    reshape_flat: bool = False,
    empty_unsafe: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Map named inputs by name (any order) and unnamed ones by position; check each.

    ``empty_unsafe``: the model's operators whose onnxruntime kernels end the process on an
    empty tensor (:class:`~blindai.server.admission.Admitted`); then an input with a zero-size
    dimension is refused."""
    by_name = {s.name: s for s in specs}
    feeds: dict[str, np.ndarray] = {}
    unnamed: list[np.ndarray] = []
    for name, array in arrays:
        if not name:
            unnamed.append(array)
            continue
        spec = by_name.get(name)
        if spec is None:
            raise InvalidInput(
                f"the model has no input named {shown(name)}; its inputs: {shown_names(by_name)}"
            )
        if name in feeds:
            raise InvalidInput(f"input {shown(name)} is given twice")
        feeds[name] = _check(spec, array, "", reshape_flat)
    free = [s for s in specs if s.name not in feeds]
    if len(unnamed) > len(free):
        raise InvalidInput(
            f"the model takes {count(len(specs), 'input')}; {count(len(arrays), 'input')} "
            f"{were(len(arrays))} given"
        )
    for i, (spec, array) in enumerate(zip(free, unnamed, strict=False)):
        feeds[spec.name] = _check(spec, array, f" (position {i})", reshape_flat)
    missing = [s.name for s in specs if s.name not in feeds]
    if missing:
        raise InvalidInput(
            f"missing {count(len(missing), 'input')} {missing}; the model takes {list(by_name)}"
        )
    if empty_unsafe:
        _refuse_empty(feeds, empty_unsafe)
    return feeds


def _refuse_empty(feeds: dict[str, np.ndarray], operators: Sequence[str]) -> None:
    """InvalidInput for an input with a zero-size dimension (for a model whose ``operators``
    end onnxruntime's process on an empty tensor: every tenant's runs with it)."""
    for name, array in feeds.items():
        if 0 in array.shape:
            raise InvalidInput(
                f"input {shown(name)}: shape {list(array.shape)} is empty; this model uses "
                f"{', '.join(operators)}, which cannot run on an empty tensor: send at least "
                "one element along each dimension"
            )
