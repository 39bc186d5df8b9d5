"""Client-side tensors: caller inputs to wire tensors, wire outputs to friendly objects."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from blindai.errors import ConfigurationError
from blindai.protocol.messages import DatumType, WireTensor

__all__ = ["PredictResponse", "Tensor", "to_wire_tensors"]


def _is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "numpy")


def _array(value: Any, dtype: DatumType | None, shape: tuple[int, ...] | None) -> np.ndarray:
    if _is_torch(value):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.generic):  # a numpy scalar: a 0-d array (ONNX shape [])
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        arr = value if dtype is None else value.astype(dtype.numpy_dtype, copy=False)
    else:
        if dtype is None:
            raise ConfigurationError("dtypes: a flat list needs a dtype (and a shape)")
        try:
            arr = np.asarray(value, dtype=dtype.numpy_dtype)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"input_tensors: cannot read the list as {dtype.name} values: {exc}"
            ) from None
    if shape is not None:
        try:
            arr = arr.reshape(shape)
        except ValueError as exc:
            raise ConfigurationError(
                f"shapes: cannot reshape {arr.size} values to {list(shape)}"
            ) from exc
    return arr


_DATUM_NAMES = {t.name.lower(): t for t in DatumType}  # "f32", "i64", "bool", ...
_DATUM_CODES: dict[int | str, int] = {
    **{int(t): int(t) for t in DatumType},  # 0.6 wire codes
    **{t.name: int(t) for t in DatumType},  # an enum's member names, e.g. "F32"
}
_DTYPE_HELP = "a DatumType, a name such as 'float32' or 'f32', or a numpy dtype"


def _as_datum(value: Any) -> DatumType | None:
    """One dtype as BlindAI 0.6.3 accepted it: DatumType, name, numpy or torch dtype."""
    if value is None or isinstance(value, DatumType):
        return value
    candidate: Any = value
    if isinstance(value, str):
        candidate = value.lower()
        if candidate in _DATUM_NAMES:
            return _DATUM_NAMES[candidate]
    elif type(value).__module__ == "torch" and type(value).__name__ == "dtype":
        candidate = str(value).removeprefix("torch.")
    elif isinstance(value, enum.Enum):  # the original clients' ModelDatumType
        candidate = value.value if isinstance(value.value, int) else value.name
    if isinstance(candidate, bool):
        pass
    elif isinstance(candidate, int | str) and candidate in _DATUM_CODES:
        return DatumType(_DATUM_CODES[candidate])
    elif not isinstance(candidate, int):
        try:
            return DatumType.from_numpy(np.dtype(candidate))
        except (TypeError, ValueError):
            pass
    raise ConfigurationError(f"dtypes: {value!r} is not {_DTYPE_HELP}")


def _shape(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) and all(_is_dim(d) for d in value):
        return tuple(int(d) for d in value)
    raise ConfigurationError(f"shapes: {value!r} is not a shape (a list of non-negative ints)")


def _is_dim(d: Any) -> bool:
    return isinstance(d, int | np.integer) and not isinstance(d, bool) and int(d) >= 0


def _per_input(value: Any, names: list[str | None], what: str) -> list[Any]:
    """``dtypes`` or ``shapes`` as one entry per input (0.6.3's forms)."""
    count = len(names)
    if value is None:
        return [None] * count
    if isinstance(value, Mapping):
        if None in names:
            raise ConfigurationError(f"{what}: a dict needs the inputs as a dict by name too")
        missing = [n for n in names if n not in value]
        if missing:
            raise ConfigurationError(f"{what}: no entry for input {missing[0]!r}")
        return [value[n] for n in names]
    one_shape = what == "shapes" and isinstance(value, list | tuple)
    if one_shape and not any(d is None or isinstance(d, list | tuple) for d in value):
        if count != 1:
            raise ConfigurationError(f"shapes: give one shape per input ({count} inputs)")
        return [value]
    if isinstance(value, list | tuple):
        if len(value) != count:
            inputs = "1 input" if count == 1 else f"{count} inputs"
            raise ConfigurationError(f"{what}: {len(value)} given for {inputs}")
        return list(value)
    if what == "shapes":
        raise ConfigurationError(f"shapes: {value!r} is not a shape (a list of non-negative ints)")
    return [value] * count


def to_wire_tensors(inputs: Any, dtypes: Any = None, shapes: Any = None) -> list[WireTensor]:
    """Accept numpy arrays (a numpy scalar is a 0-d array), torch tensors, a dict by input
    name, or flat lists + dtype/shape.

    ``dtypes`` and ``shapes`` take BlindAI 0.6.3's forms: one value for a single input, a list
    with one entry per input, or a dict by input name; a dtype is a ``DatumType``, a name
    (``"float32"``, ``"f32"``, ``"F32"``), or a numpy or torch dtype. Anything else is refused
    with a :class:`ConfigurationError` naming the argument.
    """
    named: list[tuple[str | None, Any]]
    if isinstance(inputs, Mapping):
        named = [(str(k), v) for k, v in inputs.items()]
    elif isinstance(inputs, np.ndarray | np.generic) or _is_torch(inputs):
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
        raise ConfigurationError(f"input_tensors: unsupported type {type(inputs).__name__}")
    names = [name for name, _ in named]
    dts = _per_input(dtypes, names, "dtypes")
    shp = _per_input(shapes, names, "shapes")
    out = []
    for (name, value), dt, sh in zip(named, dts, shp, strict=True):
        arr = _array(value, _as_datum(dt), _shape(sh))
        try:
            out.append(WireTensor.from_numpy(arr, name))
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
    return out


class PredictResponse(Mapping[str, np.ndarray]):
    """What ``Connection.predict`` returns: the outputs as numpy arrays.

    ``response.output`` is the list of outputs in the model's order (``response.output[0]
    .argmax()``); ``response["probabilities"]``, iteration, ``keys()``, ``items()`` and
    ``values()`` give them by output name, as the plain dict of earlier versions did;
    ``response.outputs`` is a read-only mapping by name. Its ``repr`` shows names, shapes and
    dtypes, never values.
    """

    __slots__ = ("_by_name", "output")

    def __init__(self, outputs: Iterable[tuple[str, np.ndarray]]) -> None:
        pairs = list(outputs)
        self.output: list[np.ndarray] = [array for _, array in pairs]
        """The outputs in the model's output order."""
        self._by_name: dict[str, np.ndarray] = dict(pairs)

    @property
    def outputs(self) -> Mapping[str, np.ndarray]:
        """The outputs by name (read-only)."""
        return MappingProxyType(self._by_name)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no output {name!r}; the outputs are {list(self._by_name)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}: {a.dtype}{list(a.shape)}" for name, a in self._by_name.items())
        return f"PredictResponse({shown})"


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
