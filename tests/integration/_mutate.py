"""Seeded mutations of request bodies: bytes, and decoded CBOR or JSON documents.

Every choice comes from one ``random.Random``, so a case replays from its seed. Byte
mutations (bit flips, bytes inserted, deleted, overwritten, cut, a chunk repeated) reach the
decoders; value mutations (a node swapped for one of another type, a huge or negative
integer, NaN and infinities, deep nesting, a long list, unknown and duplicate keys, odd
Unicode) reach the checks behind them, where the structure still decodes.
"""

from __future__ import annotations

import json
import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

__all__ = [
    "MARKER",
    "BadText",
    "Deep",
    "DupKeys",
    "Mutator",
    "cbor_dumps",
    "json_dumps",
]

MARKER = "QzxReqFuzzMark"
"""Planted in inputs (strings, text, ids, unknown keys): the server's log must never hold it."""

_INTERESTING_INTS = [
    0,
    1,
    -1,
    2,
    3,
    7,
    255,
    256,
    65535,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**48,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**31),
    -(2**63),
    -(2**63) - 1,
    -(2**64),
    10**30,
    -(10**30),
]
_ODD_TEXT = [
    "",
    " ",
    "\x00",
    "\n",
    "\x1b[31m",
    "\u202e",
    "\ufeff",
    "\u00e9",
    "e\u0301",
    "\U0001f600",
    "\ud800",
    "a" * 5000,
    "\u0663",
    "x/y",
    "../..",
    "%00",
    MARKER,
    MARKER + "\u200b",
    "F32",
    "BYTES",
    "FP32",
    "text",
    "image",
]
_ODD_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 3.4e38, 65504.0, 0.5]
_INTERESTING_BYTES = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xfb", b"\xbf", b"\x9f", b"\x1b"]


@dataclass(frozen=True)
class Deep:
    """``depth`` nested one-element arrays around 1, written without recursion."""

    depth: int


@dataclass(frozen=True)
class BadText:
    """A CBOR text string holding a lone surrogate: bytes that are not UTF-8."""

    text: str


@dataclass(frozen=True)
class DupKeys:
    """A map written with each of ``pairs`` in order, keys repeated (no dict can hold it)."""

    pairs: tuple[tuple[Any, Any], ...]


def _cbor_default(encoder: cbor2.CBOREncoder, value: Any) -> None:
    if isinstance(value, Deep):
        encoder.write(b"\x81" * value.depth + b"\x01")
        return
    if isinstance(value, BadText):
        raw = value.text.encode("utf-8", "surrogatepass")
        encoder.write(_cbor_head(3, len(raw)) + raw)
        return
    if isinstance(value, DupKeys):
        encoder.write(_cbor_head(5, len(value.pairs)))
        for key, item in value.pairs:
            encoder.encode(key)
            encoder.encode(item)
        return
    raise TypeError(f"cannot encode {type(value).__name__}")


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for extra, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | extra]) + struct.pack(fmt, n)
    raise ValueError(n)


def _no_surrogates(doc: Any) -> Any:
    """``doc`` with each text holding a lone surrogate as :class:`BadText`."""
    if isinstance(doc, str):
        try:
            doc.encode("utf-8")
        except UnicodeEncodeError:
            return BadText(doc)
        return doc
    if isinstance(doc, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_no_surrogates(v) for v in doc]
    if isinstance(doc, DupKeys):
        return DupKeys(tuple((_no_surrogates(k), _no_surrogates(v)) for k, v in doc.pairs))
    if isinstance(doc, cbor2.CBORTag):
        return cbor2.CBORTag(doc.tag, _no_surrogates(doc.value))
    return doc


def cbor_dumps(doc: Any) -> bytes:
    """CBOR of ``doc`` (:class:`DupKeys` written with repeated keys, lone surrogates as text
    that is not UTF-8, big integers as bignums)."""
    return cbor2.dumps(_no_surrogates(doc), default=_cbor_default)


def _json_text(doc: Any) -> str:
    if isinstance(doc, Deep):
        return "[" * doc.depth + "1" + "]" * doc.depth
    if isinstance(doc, DupKeys):
        inner = ",".join(f"{_json_text(str(k))}:{_json_text(v)}" for k, v in doc.pairs)
        return "{" + inner + "}"
    if isinstance(doc, dict):
        inner = ",".join(f"{_json_text(str(k))}:{_json_text(v)}" for k, v in doc.items())
        return "{" + inner + "}"
    if isinstance(doc, list | tuple):
        return "[" + ",".join(_json_text(v) for v in doc) + "]"
    if isinstance(doc, bytes):
        return json.dumps(doc.decode("latin-1"))
    return json.dumps(doc)  # NaN and Infinity as Python writes them (tritonclient does too)


def json_dumps(doc: Any) -> bytes:
    """JSON of ``doc`` (:class:`DupKeys` with repeated keys; lone surrogates as ``\\u`` escapes)."""
    return _json_text(doc).encode("utf-8")


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node's path in ``doc`` (dict keys and list indexes), the root first."""
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list) and len(doc) <= 64:  # a long list: its own node only
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


class Mutator:
    """Mutations drawn from ``rng``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    # -- bytes ---------------------------------------------------------------------------

    def bytes_(self, data: bytes) -> bytes:
        """``data`` with one to three byte-level mutations."""
        for _ in range(self.rng.choice((1, 1, 1, 2, 3))):
            data = self._one_bytes(data)
        return data

    def _one_bytes(self, data: bytes) -> bytes:
        r = self.rng
        buf = bytearray(data)
        at = r.randrange(len(buf) + 1)
        how = r.randrange(8)
        if how == 0 and buf:  # bit flips
            for _ in range(r.choice((1, 1, 2, 8))):
                i = r.randrange(len(buf))
                buf[i] ^= 1 << r.randrange(8)
        elif how == 1:  # bytes inserted
            buf[at:at] = r.choice(_INTERESTING_BYTES) * r.choice((1, 1, 4)) or r.randbytes(3)
        elif how == 2 and buf:  # bytes deleted
            del buf[at : at + r.choice((1, 1, 2, 4, 16))]
        elif how == 3:  # cut short
            del buf[r.randrange(len(buf) + 1) :]
        elif how == 4 and buf:  # overwritten with an interesting byte or a random run
            piece = r.choice(_INTERESTING_BYTES) if r.random() < 0.5 else r.randbytes(4)
            at = min(at, len(buf) - 1)
            buf[at : at + len(piece)] = piece
        elif how == 5 and buf:  # a chunk repeated
            n = r.choice((1, 4, 16, 64))
            buf[at:at] = buf[at : at + n] * r.choice((2, 8))
        elif how == 6:  # random bytes appended
            buf += r.randbytes(r.choice((1, 8, 64)))
        else:  # a 4-byte integer written over (a length, a count)
            value = r.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, len(buf)))
            piece = struct.pack(r.choice(("<I", ">I")), value)
            at = min(at, max(len(buf) - 4, 0))
            buf[at : at + 4] = piece
        return bytes(buf)

    # -- values --------------------------------------------------------------------------

    def value(self, doc: Any, *, cbor: bool) -> Any:
        """A copy of ``doc`` with one or two values mutated (``cbor``: values CBOR can carry
        that JSON cannot, such as byte strings and tags)."""
        doc = _copy(doc)
        for _ in range(self.rng.choice((1, 1, 2))):
            path = self.rng.choice(_paths(doc))
            doc = _set(doc, path, self._replacement(_get(doc, path), cbor=cbor))
        return doc

    def _replacement(self, node: Any, *, cbor: bool) -> Any:
        r = self.rng
        choices: list[Callable[[], Any]] = [
            lambda: r.choice(_INTERESTING_INTS),
            lambda: r.choice(_ODD_FLOATS),
            lambda: r.choice(_ODD_TEXT),
            lambda: r.choice((None, True, False, [], {})),
            lambda: self._nested(r.choice((50, 200, 2000))),
            lambda: [node] * r.choice((2, 3, 1000 if _small(node) else 3)),
            lambda: [node],
        ]
        if cbor:
            choices += [
                lambda: r.randbytes(r.choice((0, 1, 3, 12, 4096))),
                lambda: cbor2.CBORTag(r.choice((0, 2, 24, 55799, 99999)), node),
                lambda: cbor2.undefined,
            ]
        if isinstance(node, int) and not isinstance(node, bool):
            choices += [lambda: -node, lambda: node + 1, lambda: node - 1, lambda: node * 1000]
        if isinstance(node, float):
            choices += [lambda: int(node) if math.isfinite(node) else 0, lambda: str(node)]
        if isinstance(node, str):
            choices += [
                lambda: node + r.choice(_ODD_TEXT),
                lambda: node[: r.randrange(len(node) + 1)],
                lambda: node.upper(),
                lambda: node.encode() if cbor else node * 2,
            ]
        if isinstance(node, bytes):
            choices += [
                lambda: self.bytes_(node),
                lambda: node[: r.randrange(len(node) + 1)],
                lambda: node * 2,
                lambda: list(node),
                lambda: node.decode("latin-1"),
            ]
        if isinstance(node, list):
            choices += [
                lambda: node[: r.randrange(len(node) + 1)],
                lambda: node + node,
                lambda: [*node, r.choice(_INTERESTING_INTS)],
                lambda: list(reversed(node)),
                lambda: [[x] for x in node],
                lambda: {str(i): x for i, x in enumerate(node)},
            ]
        if isinstance(node, dict) and node:
            key = r.choice(list(node))
            choices += [
                lambda: {k: v for k, v in node.items() if k != key},
                lambda: {**node, MARKER + "_unknown": MARKER},
                lambda: {**node, r.choice(_ODD_TEXT): r.choice(_INTERESTING_INTS)},
                lambda: DupKeys((*node.items(), (key, self._replacement(node[key], cbor=cbor)))),
                lambda: DupKeys(((key, self._replacement(node[key], cbor=cbor)), *node.items())),
                lambda: list(node.values()),
            ]
            if cbor:
                choices.append(lambda: {**node, 7: 1, b"k": 2})
        return r.choice(choices)()

    def _nested(self, depth: int) -> Any:
        if depth > 100:
            return Deep(depth)
        doc: Any = 1 if self.rng.random() < 0.5 else {}
        for _ in range(depth):
            doc = [doc] if self.rng.random() < 0.7 else {"a": doc}
        return doc


def _small(node: Any) -> bool:
    """Whether a thousand copies of ``node`` stay a small body (a 30 KB tensor map repeated
    a thousand times made a 30 MB case that took 5 s to send and refuse)."""
    return len(repr(node)) <= 512


def _copy(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _copy(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_copy(v) for v in doc]
    return doc
