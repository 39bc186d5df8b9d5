"""Wire types of the BlindAI 0.6 protocol, declared once for both sides.

A tensor travels as ``{"info": {"fact": [dims], "datum_type": T, "node_name": str | None},
"bytes_data": bytes}``: raw little-endian bytes in C order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

__all__ = ["DatumType", "TensorInfo", "WireTensor"]


class DatumType(enum.IntEnum):
    """BlindAI 0.6 datum type codes (0-10), plus our F16 and string extensions."""

    F32 = 0
    F64 = 1
    I32 = 2
    I64 = 3
    U32 = 4
    U64 = 5
    U8 = 6
    U16 = 7
    I8 = 8
    I16 = 9
    Bool = 10
    F16 = 11

    @property
    def numpy_dtype(self) -> np.dtype[np.generic]:
        """The little-endian numpy dtype for this datum type."""
        return np.dtype(_TO_NUMPY[self])

    @classmethod
    def from_numpy(cls, dtype: np.dtype[np.generic] | type) -> DatumType:
        """The datum type of a numpy dtype; ValueError when there is none."""
        key = (
            np.dtype(dtype).newbyteorder("<").str
            if np.dtype(dtype).itemsize > 1
            else np.dtype(dtype).str
        )
        try:
            return _FROM_NUMPY[key]
        except KeyError:
            raise ValueError(f"no BlindAI datum type for numpy dtype {np.dtype(dtype)}") from None

    @classmethod
    def parse(cls, value: object) -> DatumType:
        """Accept an int code or a name such as ``"F32"``; ValueError otherwise."""
        if isinstance(value, bool):
            raise ValueError(f"invalid datum_type {value!r}")
        if isinstance(value, int) and value in cls._value2member_map_:
            return cls(value)
        if isinstance(value, str):
            try:
                return cls[value]
            except KeyError:
                pass
        raise ValueError(f"invalid datum_type {value!r}")


_TO_NUMPY = {
    DatumType.F32: "<f4",
    DatumType.F64: "<f8",
    DatumType.I32: "<i4",
    DatumType.I64: "<i8",
    DatumType.U32: "<u4",
    DatumType.U64: "<u8",
    DatumType.U8: "|u1",
    DatumType.U16: "<u2",
    DatumType.I8: "|i1",
    DatumType.I16: "<i2",
    DatumType.Bool: "|b1",
    DatumType.F16: "<f2",
}
_FROM_NUMPY = {np.dtype(v).str: k for k, v in _TO_NUMPY.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Shape, datum type and name of a tensor on the wire."""

    fact: tuple[int, ...]
    datum_type: DatumType
    node_name: str | None = None


_VIEW_BYTES = 64 << 10
"""Arrays from this size on become views, not copies (protocol.streaming copies them once);
smaller ones are copied, which costs less than writing around a view (measured: 64 KiB)."""


@dataclass(frozen=True)
class WireTensor:
    """A tensor as it travels: info plus raw little-endian C-order bytes."""

    info: TensorInfo
    bytes_data: bytes | memoryview
    """The raw bytes; from :meth:`from_numpy`, a read-only view of the (converted) array."""

    @classmethod
    def from_numpy(cls, array: np.ndarray, node_name: str | None = None) -> WireTensor:
        """Encode an array (converted to little-endian, C order) without per-element work.

        No copy of a large array (64 KiB or more) that already is little-endian and
        C-contiguous: ``bytes_data`` is then a view of its memory (do not change the array
        while the tensor is in use); small arrays are copied to ``bytes`` (faster to encode).
        """
        datum = DatumType.from_numpy(array.dtype)
        # asarray, not ascontiguousarray: that one turns a 0-d (scalar) array into shape (1,)
        arr = np.asarray(array, dtype=datum.numpy_dtype, order="C")
        data: bytes | memoryview
        if arr.nbytes >= _VIEW_BYTES:  # large: a view, so that its bytes are copied only once
            data = arr.reshape(-1).view(np.uint8).data.toreadonly()
        else:
            data = arr.tobytes()
        return cls(TensorInfo(tuple(int(d) for d in arr.shape), datum, node_name), data)

    def as_numpy(self) -> np.ndarray:
        """Decode to a numpy array (a read-only view over the bytes where possible)."""
        dtype = self.info.datum_type.numpy_dtype
        count = 1
        for d in self.info.fact:
            count *= d
        if count * dtype.itemsize != len(self.bytes_data):
            raise ValueError(
                f"tensor {self.info.node_name or ''} has {len(self.bytes_data)} bytes, "
                f"shape {list(self.info.fact)} of {self.info.datum_type.name} needs "
                f"{count * dtype.itemsize}"
            )
        return np.frombuffer(self.bytes_data, dtype=dtype).reshape(self.info.fact)
