"""Open Inference Protocol v2 datatypes and their numpy dtypes.

BF16 is carried as ``ml_dtypes.bfloat16`` when ml_dtypes is installed (tritonclient depends
on it); without it, BF16 tensors are refused with a clear message.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from blindai.errors import InvalidInput

__all__ = ["datatype_for", "dtype_for"]

_NUMPY: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
        "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32",
        "INT64": "int64", "FP16": "float16", "FP32": "float32", "FP64": "float64",
        "BYTES": "object",
    }.items()
}  # fmt: skip
_NAMES: dict[np.dtype[Any], str] = {v: k for k, v in _NUMPY.items()}
_ONNX_NAMES = {"tensor(bfloat16)": "BF16"}


def _bfloat16() -> np.dtype[Any]:
    try:
        import ml_dtypes
    except ImportError as exc:
        raise InvalidInput(
            "BF16 tensors need the ml_dtypes package, which this server lacks"
        ) from exc
    bf16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
    return bf16


def dtype_for(datatype: object) -> np.dtype[Any]:
    """The numpy dtype for a v2 datatype name; InvalidInput for an unknown one."""
    if datatype == "BF16":
        return _bfloat16()
    found: np.dtype[Any] | None = _NUMPY.get(datatype) if isinstance(datatype, str) else None
    if found is None:
        raise InvalidInput(f"unknown datatype {datatype!r:.40}; known: {[*_NUMPY, 'BF16']}")
    return found


def datatype_for(dtype: np.dtype[Any] | None, onnx_type: str = "") -> str:
    """The v2 datatype name for a numpy dtype (or, failing that, an onnxruntime type string)."""
    if dtype is not None:
        name = _NAMES.get(dtype)
        if name is not None:
            return name
        if dtype.name == "bfloat16":
            return "BF16"
    return _ONNX_NAMES.get(onnx_type, onnx_type or str(dtype))
