"""CBOR decoding that leaves large byte strings in the buffer they arrived in.

cbor2 copies a byte string out of the message, through a ``BytesIO`` (which copies a
``bytearray`` or ``memoryview`` whole first) and in 64 KiB pieces joined at the end: for a
588 KiB tensor in a reply received into a ``bytearray``, three copies and 0.2-0.3 ms of the
client's CPU. :func:`loads_views` decodes the plain subset of CBOR the messages use (integers,
text and byte strings of definite length, arrays, maps with distinct text keys, booleans,
null, floats), giving each byte string of at least :data:`VIEW_BYTES` as a read-only
``memoryview`` of the buffer (which it keeps alive). Anything else, or any doubt (tags,
indefinite lengths, other simple values, other keys, repeated keys, invalid UTF-8, nesting
past 64, arrays or maps of more than 256 elements, more than 4096 items in all, a truncated
item, bytes after the item), is :data:`UNSUPPORTED`: the caller decodes the message with
cbor2 then, so that what is accepted, refused or returned is cbor2's in every case
(:func:`blindai._documents.loads_cbor`), only the large byte strings are views rather than
``bytes``.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["UNSUPPORTED", "VIEW_BYTES", "loads_views"]

VIEW_BYTES = 64 << 10
"""Byte strings from this size on are views; smaller ones are copied to ``bytes``."""
UNSUPPORTED: Any = object()
"""What :func:`loads_views` returns for a message outside its subset."""
_MAX_DEPTH = 64
_MAX_ARRAY = 256
"""Longer arrays (byte strings sent as arrays of integers) and maps are left to cbor2."""
_MAX_ITEMS = 4096
"""A message of more items is left to cbor2 (in C, faster at many small items): this decoder,
in Python, then gave up after a millisecond or so, whatever the reply holds."""
_FLOATS = {25: struct.Struct(">e"), 26: struct.Struct(">f"), 27: struct.Struct(">d")}
_SIMPLE = {20: False, 21: True, 22: None}


class _Unsupported(Exception):
    """Outside the subset (or not valid CBOR): the message goes to cbor2."""


class _Reader:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0
        self.items = 0

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if end > len(self.data):
            raise _Unsupported
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def item(self, depth: int) -> Any:
        self.items += 1
        if depth > _MAX_DEPTH or self.items > _MAX_ITEMS or self.pos >= len(self.data):
            raise _Unsupported
        first = self.data[self.pos]
        self.pos += 1
        major, info = first >> 5, first & 31
        if major == 7:
            return self.simple(info)
        if info < 24:
            arg = info
        elif info <= 27:
            arg = int.from_bytes(self.take(1 << (info - 24)), "big")
        else:
            raise _Unsupported  # indefinite length, reserved
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            raw = self.take(arg)
            return raw if arg >= VIEW_BYTES else bytes(raw)
        if major == 3:
            try:
                return str(self.take(arg), "utf-8")
            except UnicodeDecodeError:
                raise _Unsupported from None
        if major == 4:
            if arg > _MAX_ARRAY:  # an array of byte values (older peers' byte strings): cbor2
                raise _Unsupported
            return [self.item(depth + 1) for _ in range(arg)]
        if major == 5:
            return self.map(arg, depth)
        raise _Unsupported  # tags

    def simple(self, info: int) -> Any:
        if info in _SIMPLE:
            return _SIMPLE[info]
        fmt = _FLOATS.get(info)
        if fmt is None:
            raise _Unsupported
        return fmt.unpack(self.take(fmt.size))[0]

    def map(self, n: int, depth: int) -> dict[str, Any]:
        if n > _MAX_ARRAY:
            raise _Unsupported
        out: dict[str, Any] = {}
        for _ in range(n):
            key = self.item(depth + 1)
            if type(key) is not str or key in out:
                raise _Unsupported
            out[key] = self.item(depth + 1)
        return out


def loads_views(data: bytes | bytearray | memoryview) -> Any:
    """One CBOR item from ``data``, its large byte strings read-only views of ``data``; or
    :data:`UNSUPPORTED` (see the module)."""
    view = memoryview(data).toreadonly().cast("B")
    reader = _Reader(view)
    try:
        value = reader.item(1)
    except _Unsupported:
        return UNSUPPORTED
    if reader.pos != len(view):
        return UNSUPPORTED
    return value
