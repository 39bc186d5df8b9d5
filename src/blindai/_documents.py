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
map of integers chosen to share one hash costs quadratic time: 500 KB took 7.6 s).
:func:`loads_cbor`, for CBOR from a party not yet verified, accepts neither.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the tests run on 3.11
    import tomli as tomllib

__all__ = ["TOO_DEEP", "loads_cbor", "loads_json", "loads_toml"]

TOO_DEEP = "the document nests deeper than the parser allows"


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
    strings, semantic tags but big integers are refused, nesting is at most 64 deep;
    ``cbor2.CBORDecodeError`` otherwise. Other tags stay undecoded ``CBORTag`` objects."""
    import cbor2  # here: the verifiers import this module for JSON and need no CBOR

    return cbor2.loads(
        data, semantic_decoders=_REFUSED_TAGS, strict_hashable_types=True, max_depth=64
    )
