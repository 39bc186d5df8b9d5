"""The classification extension of the Open Inference Protocol, shared by REST and gRPC.

A requested output with ``parameters.classification = k`` is returned, in place of the model's
tensor, as a BYTES tensor of the ``k`` highest values, each as ``"<value>:<index>[:<label>]"``
(Triton's format: ``<value>`` as C's ``%f`` for floating types, a decimal integer otherwise;
``<index>`` the position of the class in the flattened row). An output of rank 2 or more is
classified row by row along its first (batch) dimension: shape ``[batch, k]``; an output of
rank 1 gives shape ``[k]``. ``k`` larger than the number of classes gives every class. Ties
keep the lower index first.

Labels come from the model itself, never from a file: the ONNX model's metadata property
``labels`` (``metadata_props``), one label per line as in Triton's label files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from blindai.errors import InvalidInput

__all__ = ["MAX_LABELS", "classification_count", "classify", "labels_from_metadata"]

MAX_LABELS = 1 << 20
"""Labels read from a model's metadata at most (the rest are ignored)."""


def classification_count(value: object, output: str) -> int | None:
    """The ``classification`` parameter's count (None when absent); InvalidInput when bad."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"output {output!r}: classification must be a positive integer")
    return value


def labels_from_metadata(metadata: dict[str, str]) -> tuple[str, ...]:
    """Class labels from an ONNX model's metadata properties (key ``labels``, one a line)."""
    text = metadata.get("labels", "")
    return tuple(text.splitlines()[:MAX_LABELS])


def _text(value: Any, index: int, labels: Sequence[str], floating: bool) -> str:
    shown = f"{float(value):f}" if floating else str(int(value))
    label = labels[index] if index < len(labels) else ""
    return f"{shown}:{index}:{label}" if label else f"{shown}:{index}"


def _row(values: np.ndarray, k: int, labels: Sequence[str], floating: bool) -> list[str]:
    # stable sort on the negated values: highest first, lower index first among equals
    order = np.argsort(-values.astype(np.float64), kind="stable")[:k]
    return [_text(values[i], int(i), labels, floating) for i in order]


def classify(array: np.ndarray, k: int, name: str, labels: Sequence[str] = ()) -> np.ndarray:
    """The top-``k`` classification of output ``name`` (a BYTES array of str)."""
    if array.dtype.name == "bfloat16":
        array = array.astype(np.float32)
    if array.dtype.kind not in "iuf" or array.ndim == 0 or array.size == 0:
        raise InvalidInput(
            f"output {name!r}: classification needs a numeric tensor of rank 1 or more, "
            f"not {array.dtype} of shape {list(array.shape)}"
        )
    floating = array.dtype.kind == "f"
    if array.ndim == 1:
        return np.array(_row(array, k, labels, floating), dtype=object)
    rows = array.reshape(array.shape[0], -1)
    return np.array([_row(r, k, labels, floating) for r in rows], dtype=object)
