"""JSON, TOML and CBOR documents that anyone may have written: what would make the parser
recurse without end or compute for minutes is invalid input.

The standard library's parsers recurse once per nested array or table, so a few kilobytes of
``[[[[...`` make them raise ``RecursionError`` (a ``RuntimeError``), which no caller expecting
a ``ValueError`` for a bad document catches: a server answered such a v2 repository request
with 500, and a client reading collateral got a stack error instead of ``CollateralError``.
These wrappers turn it into the parser's own error type (both are ``ValueError``\\s), so every
caller's existing ``except ValueError`` refuses the document with its usual message.

cbor2 decodes semantic tags (a rational's numerator and denominator are reduced by their gcd,
quadratic in their size: 4 MiB of them would take minutes) and map keys of any hashable type (a
map of integers chosen to share one hash costs quadratic time: 500 KB took 7.6 s), and makes a
Python object of every item (an empty map, one byte of CBOR, costs 64 bytes and more: a reply
of 1 GiB of them would have taken some 70 GiB). :func:`loads_cbor`, for CBOR from another party,
accepts no such tag or key, and at most :data:`MAX_ITEMS` items.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the tests run on 3.11
    import tomli as tomllib

__all__ = ["MAX_ITEMS", "TOO_DEEP", "loads_cbor", "loads_json", "loads_toml"]

TOO_DEEP = "the document nests deeper than the parser allows"
MAX_ITEMS = 1 << 20
"""Most CBOR items (each string, number, map, array, tag...) :func:`loads_cbor` decodes: what
the BlindAI messages hold is a few maps around long byte strings, and a million items take at
most about 100 MB once decoded."""


def loads_json(data: str | bytes | bytearray) -> Any:
    """``json.loads``; a document nested too deeply raises ``json.JSONDecodeError`` too."""
    try:
        return json.loads(data)
    except RecursionError:
        raise json.JSONDecodeError(TOO_DEEP, "", 0) from None


def loads_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads``; a document nested too deeply raises ``tomllib.TOMLDecodeError`` too."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError(TOO_DEEP) from None


#: the tags cbor2 6 decodes into Python objects (dates, decimals, rationals, regular
#: expressions, MIME messages, UUIDs, IP addresses, sets, shared references), but big integers
#: (2, 3: read in linear time, and kept: a number out of range is each reader's error)
_SEMANTIC_TAGS = (0, 1, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261)
_SELF_DESCRIBE = 55799


def _refuse_tag(decoder: object, value: object) -> NoReturn:
    raise ValueError("CBOR semantic tags are not accepted here")


_REFUSED_TAGS = dict.fromkeys((*_SEMANTIC_TAGS, _SELF_DESCRIBE), _refuse_tag)
"""cbor2's ``semantic_decoders`` for :func:`loads_cbor`, made once (never changed): made at
each call, it cost a /run body's decoding 1 µs more than the decoding itself."""


def loads_cbor(data: bytes | bytearray | memoryview) -> Any:
    """``cbor2.loads`` for CBOR from a party not verified yet: map keys are text or byte
    strings, semantic tags but big integers are refused, nesting is at most 64 deep, at most
    :data:`MAX_ITEMS` items (counted before any is decoded); ``cbor2.CBORDecodeError``
    otherwise. Other tags stay undecoded ``CBORTag`` objects."""
    import cbor2  # here: the verifiers import this module for JSON and need no CBOR

    if len(data) > MAX_ITEMS and _items_over(memoryview(data).cast("B"), MAX_ITEMS):
        raise cbor2.CBORDecodeError(f"the document holds more than {MAX_ITEMS} CBOR items")
    return cbor2.loads(
        data, semantic_decoders=_REFUSED_TAGS, strict_hashable_types=True, max_depth=64
    )


_ARGUMENT_BYTES = {24: 1, 25: 2, 26: 4, 27: 8}


def _items_over(data: memoryview, limit: int) -> bool:
    """Whether ``data`` holds more than ``limit`` CBOR item heads, read one after another
    (string contents skipped by their declared length; no structure needed: every head is one
    item, a break one more); False too when a head is malformed or runs past the end (cbor2
    refuses those itself). At most ``limit`` + 1 heads are read."""
    pos, end, count = 0, len(data), 0
    while pos < end:
        count += 1
        if count > limit:
            return True
        first = data[pos]
        major, info = first >> 5, first & 31
        size = _ARGUMENT_BYTES.get(info, 0)
        if info >= 28 and info != 31:
            return False
        value = info if info < 24 else int.from_bytes(data[pos + 1 : pos + 1 + size], "big")
        pos += 1 + size
        if major in (2, 3) and info != 31:  # a byte or text string of definite length
            pos += value
    return False
