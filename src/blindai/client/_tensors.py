"""Client-side tensors: caller inputs to wire tensors, wire outputs to friendly objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blindai.errors import ConfigurationError
from blindai.protocol.messages import DatumType, WireTensor

__all__ = ["Tensor", "to_wire_tensors"]


def _is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "numpy")


def _array(value: Any, dtype: DatumType | None, shape: Sequence[int] | None) -> np.ndarray:
    if _is_torch(value):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        arr = value if dtype is None else value.astype(dtype.numpy_dtype, copy=False)
    else:
        if dtype is None:
            raise ConfigurationError("a flat list needs a dtype (and a shape)")
        arr = np.asarray(value, dtype=dtype.numpy_dtype)
    if shape is not None:
        try:
            arr = arr.reshape(tuple(shape))
        except ValueError as exc:
            raise ConfigurationError(f"cannot reshape {arr.size} values to {list(shape)}") from exc
    return arr


def _as_datum(value: Any) -> DatumType | None:
    if value is None:
        return None
    if isinstance(value, DatumType):
        return value
    if hasattr(value, "value") and not isinstance(value, np.dtype):
        return DatumType.parse(value.value if isinstance(value.value, int) else value.name)
    if isinstance(value, str):
        return DatumType.parse(value)
    if isinstance(value, np.dtype) or isinstance(value, type):
        return DatumType.from_numpy(np.dtype(value))
    return DatumType.parse(value)


def _per_input(value: Any, count: int) -> list[Any]:
    if (
        isinstance(value, list | tuple)
        and len(value) == count
        and (count > 1 or not isinstance(value[0], int))
    ):
        return list(value)
    return [value] * count


def to_wire_tensors(inputs: Any, dtypes: Any = None, shapes: Any = None) -> list[WireTensor]:
    """Accept numpy arrays, torch tensors, a dict by input name, or flat lists + dtype/shape."""
    if isinstance(inputs, Mapping):
        named = list(inputs.items())
    elif isinstance(inputs, np.ndarray) or _is_torch(inputs):
        named = [(None, inputs)]
    elif (
        isinstance(inputs, list | tuple)
        and inputs
        and all(
            isinstance(v, np.ndarray) or _is_torch(v) or isinstance(v, list | tuple) for v in inputs
        )
    ):
        named = [(None, v) for v in inputs]
    elif isinstance(inputs, list | tuple):
        named = [(None, list(inputs))]  # one flat list
    else:
        raise ConfigurationError(f"unsupported input type {type(inputs).__name__}")
    n = len(named)
    dts = _per_input(dtypes, n)
    shp = shapes if shapes is not None else None
    shp_list: list[Any]
    if shp is None:
        shp_list = [None] * n
    elif n == 1 and shp and all(isinstance(d, int) for d in shp):
        shp_list = [shp]
    else:
        shp_list = list(shp)
    out = []
    for (name, value), dt, sh in zip(named, dts, shp_list, strict=True):
        arr = _array(value, _as_datum(dt), sh)
        try:
            out.append(WireTensor.from_numpy(arr, None if name is None else str(name)))
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
    return out


@dataclass(frozen=True)
class Tensor:
    """One output of a run: ``as_numpy()``, ``as_flat()``, ``as_torch()``, shape, names."""

    _wire: WireTensor

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape."""
        return self._wire.info.fact

    @property
    def datum_type(self) -> DatumType:
        """The BlindAI datum type."""
        return self._wire.info.datum_type

    @property
    def node_name(self) -> str | None:
        """The ONNX output name."""
        return self._wire.info.node_name

    def as_numpy(self) -> np.ndarray:
        """A numpy array of the output (a writable copy)."""
        return self._wire.as_numpy().copy()

    def as_flat(self) -> list[Any]:
        """The values as a flat Python list."""
        flat: list[Any] = self._wire.as_numpy().ravel().tolist()
        return flat

    def as_torch(self) -> Any:
        """A torch tensor (needs torch installed)."""
        try:
            import torch
        except ImportError as exc:
            raise ConfigurationError("as_torch() needs torch installed") from exc
        return torch.from_numpy(self.as_numpy())
