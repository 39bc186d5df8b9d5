"""JSON for the v2 protocol through orjson: 5x faster parsing, numpy arrays written directly.

``loads_request`` reads an inference request with simdjson instead, leaving each input's
``data`` list as :class:`Numbers`: a flat list of numbers becomes a float64 (or int64) array
without a Python object per element (a 224x224 RGB image: 3 ms instead of 8 ms as floats, 2
ms instead of 7-9 ms as UINT8 integers). A list is known flat when the document's text holds no
``[`` beyond those of the arrays it was read into (:func:`_mark_flat`); a nested or ragged list
is read through Python lists, as the other parsers' documents are. A document simdjson refuses
goes through ``loads``, which decides (``NaN``, big integers) or gives the error. So does a
document long enough to hold an array of 2**24 - 1 elements or more (:data:`SIMDJSON_MOST_BYTES`):
simdjson keeps an array's length in 24 bits, saturated there, and pysimdjson sizes the list it
converts an array to by that length but fills it with every element: a 64 MiB request of 33
million numbers wrote 130 MB past the list's end (the process aborted, ``free(): invalid
size``).

``loads`` parses with orjson and falls back to the standard library for what orjson refuses
but Python's ``json`` (and so tritonclient) writes: ``NaN``/``Infinity`` tokens and integers
beyond 64 bits; the standard library also gives the error for invalid JSON. ``dumps`` writes
numpy arrays (flat, C order) straight from their buffers; orjson writes a non-finite float as
``null``, so a document holding one is written by the standard library instead, as ``NaN`` or
``Infinity``, as before. Floats come out as the shortest text that reads back to the same value
of their own type (``0.1`` for a float32 0.1).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np
import orjson
import simdjson

from blindai._documents import loads_json

__all__ = [
    "MAX_TENSORS",
    "SIMDJSON_MOST_BYTES",
    "Numbers",
    "TooManyTensors",
    "dumps",
    "loads",
    "loads_request",
]

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_FEW_KEYS = 16
"""An object of more keys is converted whole (its ``data`` array then as a list): simdjson
finds a key by walking the object, so looking each one up is quadratic (200 000 keys: 4 min)."""


_SATURATED = 0xFFFFFF
"""The length simdjson gives an array of this many elements or more (24 bits)."""
SIMDJSON_MOST_BYTES = 2 * _SATURATED
"""The longest document simdjson reads here: an array of ``_SATURATED`` elements takes at
least ``2 * _SATURATED + 1`` bytes (one-character elements, commas and brackets)."""


MAX_TENSORS = 4096
"""Inputs, or outputs, one request may list: each costs Python work to read and check (a
request of 200 000 inputs, 12 MB, took 2.6 s of a worker before it was refused)."""


class TooManyTensors(ValueError):
    """A request lists more than :data:`MAX_TENSORS` inputs or outputs (``what``), raised
    before they are read; its message is the one every v2 codec (REST, gRPC) gives."""

    def __init__(self, count: int, what: str = "inputs") -> None:
        super().__init__(f"the request lists {count} {what}, more than {MAX_TENSORS}")
        self.count = count


def loads(raw: bytes | memoryview) -> Any:
    """Parse a JSON document; ``ValueError`` (``json.JSONDecodeError``) when it is not one."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return loads_json(bytes(raw))  # NaN, big integers; else its own error and position


class Numbers:
    """A JSON array as simdjson parsed it, read without a Python object per element."""

    __slots__ = ("_array", "_list", "flat")

    def __init__(self, array: simdjson.Array) -> None:
        self._array = array  # holds its parser (and so the parsed document)
        self._list: list[Any] | None = None
        self.flat = False
        """Whether the array is known to hold no array (set by :func:`loads_request`)."""

    def __len__(self) -> int:
        return len(self._array)

    def holds_no_array(self) -> bool:
        """Whether no element is an array, found by converting the elements to Python (kept
        for :meth:`as_list` when one is)."""
        values: list[Any] = self._array.as_list()
        if list not in map(type, values):
            return True
        self._list = values
        return False

    def _buffer(self, of_type: Literal["d", "i"], dtype: type[np.generic]) -> np.ndarray | None:
        if not self.flat:  # as_buffer flattens nested lists, ragged ones too
            return None
        try:
            buffer = self._array.as_buffer(of_type=of_type)
        except (TypeError, ValueError):  # an element of another type (or out of its range)
            return None
        values = np.frombuffer(buffer, dtype)
        return values if values.size == len(self._array) else None

    def floats(self) -> np.ndarray | None:
        """The elements as float64 when the array is a flat list of numbers, else None."""
        return self._buffer("d", np.float64)

    def integers(self) -> np.ndarray | None:
        """The elements as int64 when the array is a non-empty flat list of integers that fit
        int64 (no fractions, exponents or booleans), else None."""
        return self._buffer("i", np.int64) if len(self) else None

    def as_list(self) -> list[Any]:
        """The elements as Python objects (nested lists kept)."""
        if self._list is not None:
            return self._list
        values: list[Any] = self._array.as_list()
        return values


def _python(value: Any) -> Any:
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _fields(obj: simdjson.Object, key: str, convert: Callable[[Any], Any]) -> dict[str, Any]:
    """``obj`` as a dict of Python values, but ``convert``ed for ``key``."""
    names = list(obj.keys())
    # obj[name] walks the object (quadratic in its keys), and cannot find a name holding a
    # NUL (``\u0000``): pysimdjson passes the name as a C string, cut there (KeyError, a 500)
    if len(names) > _FEW_KEYS or "\0" in "".join(names):
        as_dict: dict[str, Any] = obj.as_dict()  # (items() converts every value as well)
        return as_dict
    return {name: convert(obj[name]) if name == key else _python(obj[name]) for name in names}


def _data(item: Any) -> Any:
    return Numbers(item) if isinstance(item, simdjson.Array) else _python(item)


def _tensor(value: Any) -> Any:
    """An element of ``inputs``: its ``data`` array kept as Numbers, the rest as Python."""
    return _fields(value, "data", _data) if isinstance(value, simdjson.Object) else _python(value)


def _inputs(item: Any) -> Any:
    if not isinstance(item, simdjson.Array):
        return _python(item)
    if len(item) > MAX_TENSORS:
        raise TooManyTensors(len(item))
    return [_tensor(value) for value in item]  # item[i] walks from the start: quadratic


_MOST_NODES = 1 << 18
"""Values outside the data arrays that :func:`_mark_flat` walks at most (a request holds
tens; past this many, its data arrays are read as lists)."""


def _arrays(doc: Any) -> tuple[int, list[Numbers]] | None:
    """The lists of ``doc`` and its Numbers; None past :data:`_MOST_NODES` values."""
    lists, numbers, stack, left = 0, [], [doc], _MOST_NODES
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is Numbers:
            numbers.append(value)
        elif kind is dict or kind is list:
            left -= len(value)
            if left < 0:
                return None
            if kind is list:
                lists += 1
                stack += value
            else:
                stack += value.values()
    return lists, numbers


def _at_most(text: bytes, most: int) -> int:
    """How many ``[`` bytes ``text`` holds, counting no further than ``most + 1``."""
    found, at = 0, text.find(b"[")
    while at >= 0 and found <= most:
        found += 1
        at = text.find(b"[", at + 1)
    return found


_FEW_NUMBERS = 1024
"""Elements of all data arrays together up to which each array is checked for nesting by
converting it to Python (a microsecond for 16 numbers) rather than by :func:`_mark_flat`."""


def _mark_flat(text: bytes, doc: Any) -> None:
    """Mark the Numbers of ``doc`` flat when ``text`` holds no ``[`` beyond the first of each
    of them and one per list of ``doc``: then none of them holds an array.

    Each list and Numbers kept in ``doc`` was read from an array of its own in ``text`` (of a
    key given twice, one value is kept), so the text holds at least that many ``[``; any
    other (a nested array, an array not kept, a ``[`` in a string) leaves them unmarked."""
    found = _arrays(doc)
    if found is None:
        return
    lists, numbers = found
    expected = lists + len(numbers)
    if _at_most(text, expected) == expected:
        for item in numbers:
            item.flat = True


def loads_request(raw: bytes | memoryview) -> Any:
    """An inference request document, as ``loads`` reads it except that each ``inputs[i].data``
    array is a :class:`Numbers`; ``ValueError`` when it is not JSON (:class:`TooManyTensors`
    when it lists too many inputs)."""
    if len(raw) > SIMDJSON_MOST_BYTES:  # an array may be too long for simdjson's length
        return loads(raw)
    text = bytes(raw)
    try:
        doc = simdjson.Parser().parse(text)
    except (ValueError, RuntimeError, TypeError):  # NaN, big integers, or not JSON at all
        return loads(raw)
    if not isinstance(doc, simdjson.Object):
        return _python(doc)
    request = _fields(doc, "inputs", _inputs)
    inputs = request.get("inputs")
    if type(inputs) is not list:
        return request
    numbers = [t["data"] for t in inputs if type(t) is dict and type(t.get("data")) is Numbers]
    if sum(map(len, numbers)) > _FEW_NUMBERS:
        _mark_flat(text, request)
    else:
        for item in numbers:
            item.flat = item.holds_no_array()
    return request


def _finite(arrays: Iterable[np.ndarray]) -> bool:
    return all(a.dtype.kind != "f" or bool(np.isfinite(a).all()) for a in arrays)


def _plain(value: object) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(doc: Any, *, arrays: Iterable[np.ndarray] = ()) -> bytes:
    """``doc`` as compact JSON; ``arrays`` are the numpy arrays it holds (checked for NaN)."""
    if _finite(arrays):
        try:
            return orjson.dumps(doc, option=_NUMPY)
        except orjson.JSONEncodeError:
            pass  # a dtype orjson does not write (bfloat16): the standard library does
    return json.dumps(doc, separators=(",", ":"), default=_plain).encode()
