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

__all__ = ["head", "message_prefix"]

_MAX_ARGUMENT = (1 << 64) - 1


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
