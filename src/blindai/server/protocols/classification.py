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

import itertools
import re
from collections.abc import Iterator, Sequence

import numpy as np

from blindai.errors import InferenceFailed, InvalidInput
from blindai.server._shown import shown

__all__ = [
    "MAX_LABELS",
    "MIN_ELEMENT_BYTES",
    "check_classified_size",
    "classification_count",
    "classified_count",
    "classify",
    "labels_from_metadata",
]

MAX_LABELS = 1 << 20
"""Labels read from a model's metadata at most (the rest are ignored)."""


def classification_count(value: object, output: str) -> int | None:
    """The ``classification`` parameter's count (None when absent); InvalidInput when bad."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"output {output!r}: classification must be a positive integer")
    return value


_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_LINE = re.compile(f"([^{_BREAKS}]*)(?:\r\n|[{_BREAKS}])?")
"""One line and its end, as ``str.splitlines`` reads them."""


def _lines(text: str) -> Iterator[str]:
    """``text.splitlines()``, one line at a time."""
    at = 0
    while at < len(text):
        line = _LINE.match(text, at)
        assert line is not None  # the pattern matches everywhere, and takes a character here
        yield line.group(1)
        at = line.end()


def labels_from_metadata(metadata: dict[str, str]) -> tuple[str, ...]:
    """Class labels from an ONNX model's metadata properties (key ``labels``, one a line): the
    first :data:`MAX_LABELS` lines; a text longer than that many characters is read one line
    at a time. Every line used to be split out first, at each request: labels of 3 Mi short
    lines (9 MB of the model) took 187 MB a request to keep 1 Mi of them."""
    text = metadata.get("labels", "")
    if len(text) <= MAX_LABELS:  # at most MAX_LABELS lines: split at once (the usual labels)
        return tuple(text.splitlines())
    return tuple(itertools.islice(_lines(text), MAX_LABELS))


MIN_ELEMENT_BYTES = 7
"""The fewest bytes one classification element takes in a reply (``0:0`` and the binary
extension's 4-byte length, or JSON's quotes and comma)."""


def classified_count(array: np.ndarray, k: int) -> int:
    """How many elements the top-``k`` classification of ``array`` has (rows x kept classes)."""
    if array.ndim == 0 or array.size == 0:
        return 0
    rows = array.shape[0] if array.ndim > 1 else 1
    return rows * min(k, array.size // rows)


def check_classified_size(array: np.ndarray, k: int, name: str, *, limit: int) -> None:
    """InferenceFailed (before any work) when the classification of output ``name`` cannot fit
    a reply of ``limit`` bytes: a 64 MiB request of 16M one-class rows took minutes of the event
    loop and gigabytes of strings before the reply size was checked."""
    elements = classified_count(array, k)
    if elements * MIN_ELEMENT_BYTES > limit:
        raise InferenceFailed(
            f"the classification of output {shown(name)} would have {elements} elements, more than "
            f"a reply of {limit} bytes (--max-response-bytes) holds; ask for a smaller k or "
            "fewer rows"
        )


def _texts(
    values: np.ndarray, order: np.ndarray, labels: Sequence[str], floating: bool
) -> list[str]:
    """``"<value>:<index>[:<label>]"`` for each kept (value, index), row by row."""
    shown = [f"{v:f}" for v in values.tolist()] if floating else [str(v) for v in values.tolist()]
    out = []
    for text, index in zip(shown, order.tolist(), strict=True):
        label = labels[index] if index < len(labels) else ""
        out.append(f"{text}:{index}:{label}" if label else f"{text}:{index}")
    return out


def classify(array: np.ndarray, k: int, name: str, labels: Sequence[str] = ()) -> np.ndarray:
    """The top-``k`` classification of output ``name`` (a BYTES array of str); all rows are
    sorted at once (a stable sort on the negated values: highest first, lower index first among
    equals)."""
    if array.dtype.name == "bfloat16":
        array = array.astype(np.float32)
    if array.dtype.kind not in "iuf" or array.ndim == 0 or array.size == 0:
        raise InvalidInput(
            f"output {shown(name)}: classification needs a numeric tensor of rank 1 or more, "
            f"not {array.dtype} of shape {list(array.shape)}"
        )
    floating = array.dtype.kind == "f"
    rows = array.reshape(1 if array.ndim == 1 else array.shape[0], -1)
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(rows, order, axis=1)
    texts = _texts(kept.ravel(), order.ravel(), labels, floating)
    shape = order.shape[1:] if array.ndim == 1 else order.shape
    out = np.empty(len(texts), dtype=object)
    out[:] = texts
    return out.reshape(shape)
