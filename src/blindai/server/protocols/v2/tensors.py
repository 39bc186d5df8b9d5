"""Tensor conversion for the v2 protocol: JSON ``data`` and binary blobs to numpy and back.

JSON data go through one ``np.asarray`` call (no per-element Python loop) and are checked for
kind (no floats where integers are declared, booleans only for BOOL) and range before being
cast; a flat list of numbers for a floating type is read by simdjson straight into a float64
array, and a flat list of integers for an integer type into an int64 array
(``blindai.server._json.Numbers``), the array numpy makes of the same list; binary blobs are
read with ``np.frombuffer``. Only BYTES tensors need a loop per element.

Each BYTES element becomes a Python object (about 70 bytes beside its characters): a request
holds at most :data:`MAX_STRINGS` of them, all its inputs together, counted from their declared
shapes before any is decoded (:class:`StringCount`); a binary blob is decoded up to its shape's
count, and an element past it refused unread. Before, 64 MiB of two-character strings in one
v2 binary request took 857 MB and 10 s of a worker to decode (declared so, or declared as one
element).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson

from blindai.errors import InferenceFailed, InvalidInput
from blindai.server._json import Numbers
from blindai.server._shown import shown
from blindai.server._text import count

__all__ = [
    "MAX_STRINGS",
    "StringCount",
    "array_from_binary",
    "array_from_json",
    "array_to_binary",
    "array_to_json",
    "element_count",
]

_LENGTH = struct.Struct("<I")

MAX_STRINGS = 1 << 20
"""The BYTES elements one request may hold, all its inputs together (about 70 MB of Python
objects, as much again as the largest body at the defaults)."""


class StringCount:
    """The BYTES elements of one request's inputs so far (see :data:`MAX_STRINGS`)."""

    def __init__(self) -> None:
        self.taken = 0

    def take(self, dtype: np.dtype[Any], shape: tuple[int, ...], label: str) -> None:
        """Count an input of ``dtype`` and ``shape`` (BYTES only) before it is decoded;
        InvalidInput once the request's strings pass :data:`MAX_STRINGS`."""
        if dtype.kind != "O":
            return
        self.taken += element_count(shape)
        if self.taken > MAX_STRINGS:
            raise InvalidInput(
                f"{label}: the request's inputs hold {self.taken} BYTES elements, more than "
                f"the {MAX_STRINGS} one request may hold"
            )


def element_count(shape: tuple[int, ...]) -> int:
    """Number of elements of a shape (1 for a scalar)."""
    return math.prod(shape)


def _fit(array: np.ndarray, shape: tuple[int, ...], label: str) -> np.ndarray:
    if array.size != element_count(shape):
        raise InvalidInput(
            f"{label}: {count(array.size, 'element')} given, shape {list(shape)} needs "
            f"{element_count(shape)}"
        )
    return array.reshape(shape)


def _integers(data: list[Any], raw: np.ndarray, dtype: np.dtype[Any], label: str) -> np.ndarray:
    info = np.iinfo(dtype)
    if raw.dtype.kind in "iu":
        if int(raw.min()) < info.min or int(raw.max()) > info.max:
            raise InvalidInput(f"{label}: a value is out of range for {dtype}")
        return raw.astype(dtype)
    # numpy falls back to float64 (or object) for lists mixing large and small integers:
    # convert the Python numbers themselves, then check that nothing was truncated
    if raw.dtype.kind == "O" and not all(type(x) is int for x in raw.flat):
        raise InvalidInput(f"{label}: data of kind {raw.dtype} do not fit {dtype}")
    if raw.dtype.kind not in "fO":
        raise InvalidInput(f"{label}: data of kind {raw.dtype} do not fit {dtype}")
    try:
        exact = np.asarray(data, dtype=dtype)
    except (OverflowError, ValueError, TypeError) as exc:
        raise InvalidInput(f"{label}: a value is out of range for {dtype}") from exc
    if raw.dtype.kind == "f" and not np.array_equal(exact.astype(np.float64), raw):
        raise InvalidInput(f"{label}: {dtype} data must be integers")
    return exact


def _convert(data: list[Any], raw: np.ndarray, dtype: np.dtype[Any], label: str) -> np.ndarray:
    if dtype.kind in "iu":
        return _integers(data, raw, dtype, label)
    ok = raw.dtype.kind == "b" if dtype.kind == "b" else raw.dtype.kind in "iuf"
    if not ok:
        raise InvalidInput(f"{label}: data of kind {raw.dtype} do not fit {dtype}")
    try:
        with np.errstate(over="raise"):
            return raw.astype(dtype)
    except FloatingPointError as exc:
        raise InvalidInput(f"{label}: a value is out of range for {dtype}") from exc


def array_from_json(
    data: object, dtype: np.dtype[Any], shape: tuple[int, ...], label: str
) -> np.ndarray:
    """A JSON ``data`` list (flat or nested) as an array of ``dtype`` and ``shape``.

    Integer types take integral values within their range; BOOL takes only booleans; floating
    types take any number.
    """
    if isinstance(data, Numbers):
        values = _numbers(data, dtype)
        if values is not None:  # a flat list of numbers, read without Python objects
            return _fit(_convert([], values, dtype, label), shape, label)
        data = data.as_list()
    if not isinstance(data, list):
        raise InvalidInput(f"{label}: data must be a list")
    if dtype.kind == "O":
        return _fit(_strings_from_json(data, label), shape, label)
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"{label}: data is not a regular nested list of numbers") from exc
    if raw.size == 0:
        return _fit(np.empty(0, dtype), shape, label)
    return _fit(_convert(data, raw, dtype, label), shape, label)


def _numbers(data: Numbers, dtype: np.dtype[Any]) -> np.ndarray | None:
    """A flat list of numbers as float64 for a floating type, as int64 for an integer type
    (integers only: what numpy reads from the same list, int64 when every value fits)."""
    if dtype.kind == "f":
        return data.floats()
    if dtype.kind in "iu":
        return data.integers()
    return None


def _strings_from_json(data: list[Any], label: str) -> np.ndarray:
    try:
        raw = np.asarray(data, dtype=object)
    except ValueError as exc:
        raise InvalidInput(f"{label}: data is not a regular nested list of strings") from exc
    flat = raw.ravel()
    if not all(isinstance(x, str) for x in flat):
        raise InvalidInput(f"{label}: BYTES data must be a (nested) list of strings")
    if not all(x.isascii() or _unicode(x) for x in flat):
        raise InvalidInput(
            f"{label}: BYTES data must be Unicode text (a \\u escape of a lone surrogate is not)"
        )
    return flat


def _unicode(text: str) -> bool:
    """Whether ``text`` has a UTF-8 form: no lone surrogate, which the standard library's JSON
    parser (reading what simdjson and orjson refuse) keeps from a ``\\ud800`` escape."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def array_from_binary(
    blob: memoryview, dtype: np.dtype[Any], shape: tuple[int, ...], label: str
) -> np.ndarray:
    """A binary blob (raw little-endian, C order; length-prefixed for BYTES) as an array."""
    if dtype.kind == "O":
        return _fit(_strings_from_binary(blob, label, shape), shape, label)
    want = element_count(shape) * dtype.itemsize
    if len(blob) != want:
        raise InvalidInput(
            f"{label}: binary_data_size is {len(blob)} bytes, shape {list(shape)} of "
            f"{dtype} needs {want}"
        )
    array = np.frombuffer(blob, dtype=dtype.newbyteorder("<")).reshape(shape)
    if dtype.kind == "b" and array.size and int(array.view(np.uint8).max()) > 1:
        raise InvalidInput(f"{label}: BOOL bytes must be 0 or 1")
    return array if array.flags.aligned and dtype.isnative else array.astype(dtype)


def _strings_from_binary(blob: memoryview, label: str, shape: tuple[int, ...]) -> np.ndarray:
    # UTF-8 elements become str; others stay bytes (an image or WAV file for a pipeline).
    # Model string inputs refuse bytes elements when the data plane matches them. Each element
    # is decoded from its slice of the blob (no bytes copy first): 1.5x faster a element.
    # An element past ``shape``'s count is refused before it is decoded: StringCount bounds
    # the declared counts, not what a blob holds (a [1] of 2 million elements took 3 s).
    most = element_count(shape)
    items: list[str | bytes] = []
    append = items.append
    unpack = _LENGTH.unpack_from
    offset = 0
    end = len(blob)
    while offset < end:
        if len(items) == most:
            raise InvalidInput(
                f"{label}: more than {count(most, 'element')} given, shape {list(shape)} "
                f"needs {most}"
            )
        if offset + 4 > end:
            raise InvalidInput(f"{label}: BYTES data ends inside a length prefix")
        (size,) = unpack(blob, offset)
        offset += 4
        stop = offset + size
        if stop > end:
            raise InvalidInput(f"{label}: a BYTES element runs past the end of its data")
        element = blob[offset:stop]
        try:
            append(str(element, "utf-8"))
        except UnicodeDecodeError:
            append(bytes(element))
        offset = stop
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _utf8(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, dict):  # a ZipMap's map of label to probability: JSON text
        return orjson.dumps(item, option=orjson.OPT_NON_STR_KEYS)
    return str(item).encode("utf-8")


def array_to_binary(array: np.ndarray) -> bytes | memoryview:
    """An output as the binary extension carries it (length-prefixed UTF-8 for BYTES); a
    numeric array that already is little-endian and C-contiguous is a view, not a copy."""
    if array.dtype.kind == "O":
        parts = []
        for item in array.ravel():
            raw = _utf8(item)
            parts += [_LENGTH.pack(len(raw)), raw]
        return b"".join(parts)
    dtype = array.dtype.newbyteorder("<")
    return np.ascontiguousarray(array, dtype=dtype).reshape(-1).view(np.uint8).data


_JSON_NATIVE = frozenset("?bBhHiIlLqQefd")
"""numpy type codes orjson writes straight from the array's buffer."""


def array_to_json(array: np.ndarray, name: str) -> np.ndarray | list[Any]:
    """An output as a flat JSON list: a flat native-order array for the numeric types orjson
    writes directly, else a list (strings for BYTES)."""
    if array.dtype.kind != "O":
        if array.dtype.char in _JSON_NATIVE and array.dtype.isnative:
            return np.ascontiguousarray(array).reshape(-1)
        return list(array.ravel().tolist())
    try:
        return [x if isinstance(x, str) else _utf8(x).decode("utf-8") for x in array.ravel()]
    except UnicodeDecodeError as exc:
        raise InferenceFailed(
            f"output {shown(name)} holds bytes that are not UTF-8; ask for it with binary_data",
        ) from exc
