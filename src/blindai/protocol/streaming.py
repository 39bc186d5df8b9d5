"""CBOR written in pieces: a message whose last value is a long byte string, sent as it is read.

A CBOR byte string is a head (major type 2 and its length) followed by the raw bytes, so a
message ``{..., "model": <n bytes>}`` is its fixed prefix -- the map's head, the other fields,
the key ``"model"`` and the byte string's head -- then the ``n`` bytes themselves, which can
come straight from a file without ever being one object in memory. The result is ordinary CBOR:
``cbor2.loads(prefix + data)`` decodes it.

Example::

    >>> import cbor2
    >>> prefix = message_prefix({"model_name": "m"}, "model", 3)
    >>> cbor2.loads(prefix + b"abc")
    {'model_name': 'm', 'model': b'abc'}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2

__all__ = ["dumps", "dumps_parts", "head", "message_prefix"]

_MAX_ARGUMENT = (1 << 64) - 1
_BIG = 64 << 10
"""Byte strings from this size on are copied once, into the joined message, never encoded."""


def head(major: int, argument: int) -> bytes:
    """The head of a CBOR item: ``major`` type (0-7) and its argument (a length or value)."""
    if not 0 <= major <= 7 or not 0 <= argument <= _MAX_ARGUMENT:
        raise ValueError("a CBOR head takes a major type 0-7 and an unsigned 64-bit argument")
    top = major << 5
    if argument < 24:
        return bytes([top | argument])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if argument < 1 << (8 * size):
            return bytes([top | info]) + argument.to_bytes(size, "big")
    raise AssertionError("unreachable")  # pragma: no cover


def message_prefix(fields: Mapping[str, Any], last_key: str, last_length: int) -> bytes:
    """Everything of the map ``{**fields, last_key: <last_length bytes>}`` but those bytes."""
    if last_key in fields:
        raise ValueError(f"{last_key!r} is both a field and the streamed value")
    parts = [head(5, len(fields) + 1)]
    for key, value in fields.items():
        parts += [cbor2.dumps(key), cbor2.dumps(value)]
    parts += [cbor2.dumps(last_key), head(2, last_length)]
    return b"".join(parts)


def _has_buffers(obj: Any) -> bool:
    """Whether ``obj`` holds a buffer cbor2 should not encode: a large byte string, or any
    memoryview or bytearray (cbor2 would write a memoryview as an array of integers)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is int or item is None:
            continue
        if kind is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is bytes:
            if len(item) >= _BIG:
                return True
        elif kind is memoryview or kind is bytearray:
            return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, memoryview | bytearray) or (
            isinstance(item, bytes) and len(item) >= _BIG
        ):
            return True
    return False


def _parts(obj: Any, out: list[bytes | memoryview]) -> None:
    if not _has_buffers(obj):
        out.append(cbor2.dumps(obj))  # one C call for everything without a large buffer
    elif isinstance(obj, dict):
        out.append(head(5, len(obj)))
        for key, value in obj.items():
            _parts(key, out)
            _parts(value, out)
    elif isinstance(obj, list | tuple):
        out.append(head(4, len(obj)))
        for value in obj:
            _parts(value, out)
    else:
        view = memoryview(obj).cast("B")
        out += [head(2, view.nbytes), view] if view.nbytes >= _BIG else [cbor2.dumps(bytes(view))]


def dumps_parts(obj: Any) -> list[bytes | memoryview]:
    """The pieces of ``cbor2.dumps(obj)``: small items joined, large byte strings left as
    views of their buffers (send them one after the other, or join them)."""
    if not _has_buffers(obj):
        return [cbor2.dumps(obj)]
    parts: list[bytes | memoryview] = []
    _parts(obj, parts)
    out: list[bytes | memoryview] = []
    small: list[bytes | memoryview] = []
    for part in parts:
        if isinstance(part, memoryview):
            if small:
                out.append(b"".join(small))
                small = []
            out.append(part)
        else:
            small.append(part)
    if small:
        out.append(b"".join(small))
    return out


def dumps(obj: Any) -> bytes:
    """``cbor2.dumps(obj)``, byte for byte, with large byte strings copied once: maps, arrays
    and byte strings are written here, everything else by cbor2 (which copies a byte string
    through a growing buffer: 0.36 ms for 588 KiB, against 0.02 ms for one join)."""
    if not _has_buffers(obj):
        return cbor2.dumps(obj)
    out: list[bytes | memoryview] = []
    _parts(obj, out)
    return b"".join(out)
