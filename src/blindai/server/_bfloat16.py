"""bfloat16 tensors through onnxruntime's Python API, which has no numpy type for them.

numpy has no bfloat16 either; ``ml_dtypes.bfloat16`` gives it one (2 bytes, the upper half of
a float32). onnxruntime takes such an array when it is wrapped in an ``OrtValue`` that names the
ONNX type (:func:`to_ort_value`; ``InferenceSession.run`` takes OrtValues among numpy inputs),
and, through ``run_with_ort_values``, gives a bfloat16 result back as an ``OrtValue`` whose
bytes :func:`from_ort_value` copies into an ``ml_dtypes.bfloat16`` array (CPU memory only).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import onnxruntime as ort

from blindai.errors import InferenceFailed, InvalidInput

__all__ = ["BF16_ONNX_TYPE", "bfloat16", "from_ort_value", "to_ort_value"]

BF16_ONNX_TYPE = "tensor(bfloat16)"
_BF16_ELEMENT = 16  # onnx.TensorProto.BFLOAT16


def bfloat16() -> np.dtype[Any] | None:
    """numpy's bfloat16 dtype (from ml_dtypes), or None when ml_dtypes is not installed."""
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - a server dependency
        return None
    found: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
    return found


def to_ort_value(array: np.ndarray) -> Any:
    """An OrtValue onnxruntime accepts for ``array`` (bfloat16 arrays named as such)."""
    if array.dtype.kind == "O":
        raise InvalidInput("a model with bfloat16 outputs cannot take string inputs on this server")
    if array.dtype.name != "bfloat16":
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
    raw = np.ascontiguousarray(array).view(np.uint16)
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(raw, onnx_element_type=_BF16_ELEMENT)


def from_ort_value(value: Any) -> np.ndarray:
    """A numpy array holding a copy of an output OrtValue (bfloat16 through ml_dtypes)."""
    if value.data_type() != BF16_ONNX_TYPE:
        return np.asarray(value.numpy())
    dtype = bfloat16()
    if dtype is None or value.device_name().lower() != "cpu":
        raise InferenceFailed("a bfloat16 output can only be read from CPU memory with ml_dtypes")
    shape = tuple(value.shape())
    size = int(value.tensor_size_in_bytes())
    if size != 2 * int(np.prod(shape, dtype=np.int64)):
        raise InferenceFailed("onnxruntime gave a bfloat16 output of an unexpected size")
    raw = ctypes.string_at(value.data_ptr(), size) if size else b""
    return np.frombuffer(raw, dtype=np.uint16).copy().view(dtype).reshape(shape)
