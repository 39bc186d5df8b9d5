"""JSON and TOML from anyone: too deep a nesting is the parser's own error, not RecursionError."""

from __future__ import annotations

import json
import sys

import cbor2
import pytest

from blindai._documents import TOO_DEEP, loads_cbor, loads_json, loads_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the tests run on 3.11
    import tomli as tomllib

DEEP = 100_000  # far past the interpreter's recursion limit, 200 KB of text


@pytest.mark.parametrize(
    "text",
    ["[" * DEEP + "]" * DEEP, '{"a":' * DEEP + "1" + "}" * DEEP, "[" * DEEP],
    ids=["arrays", "objects", "unclosed"],
)
@pytest.mark.parametrize("as_bytes", [False, True])
def test_deep_json_is_a_decode_error(text: str, as_bytes: bool) -> None:
    with pytest.raises(RecursionError):  # what the standard library does on its own
        json.loads(text)
    with pytest.raises(json.JSONDecodeError, match=TOO_DEEP):
        loads_json(text.encode() if as_bytes else text)


@pytest.mark.parametrize(
    "text",
    ["a = " + "[" * DEEP + "]" * DEEP, "a = " + "{b = " * DEEP + "1" + "}" * DEEP],
    ids=["arrays", "inline-tables"],
)
def test_deep_toml_is_a_decode_error(text: str) -> None:
    with pytest.raises(RecursionError):
        tomllib.loads(text)
    with pytest.raises(tomllib.TOMLDecodeError, match=TOO_DEEP):
        loads_toml(text)


def test_documents_within_the_limit_parse_as_the_standard_library_does() -> None:
    nested = "[" * 200 + "1" + "]" * 200
    assert loads_json(nested) == json.loads(nested)
    assert loads_json(b'{"a": [1, 2.5, null, "x"]}') == {"a": [1, 2.5, None, "x"]}
    assert loads_toml("a = [[1], [2]]\n[t]\nb = {c = 1}") == {"a": [[1], [2]], "t": {"b": {"c": 1}}}
    with pytest.raises(json.JSONDecodeError, match="Expecting"):
        loads_json("{")
    with pytest.raises(tomllib.TOMLDecodeError):
        loads_toml("[a")


_COLLIDING = (1 << 61) - 1  # the modulus of Python's int hash: its multiples all hash to 0


def test_loads_cbor_refuses_map_keys_other_than_text_and_bytes():
    """Integer keys chosen to share one hash made cbor2's dict insertion quadratic: 40 000 of
    them (518 KB) took 7.6 s of the client, before any verification."""
    n = 1000
    body = b"\xb9" + n.to_bytes(2, "big")
    body += b"".join(cbor2.dumps(i * _COLLIDING) + b"\x00" for i in range(1, n + 1))
    assert len(cbor2.loads(body)) == n  # what cbor2 alone does with it
    with pytest.raises(cbor2.CBORDecodeError, match="map key must be a text string or byte"):
        loads_cbor(body)
    assert loads_cbor(cbor2.dumps({"text": 1, b"bytes": [2.5, None]})) == {
        "text": 1,
        b"bytes": [2.5, None],
    }


@pytest.mark.parametrize("tag", [0, 1, 4, 5, 25, 28, 29, 30, 35, 36, 37, 258, 55799])
def test_loads_cbor_refuses_semantic_tags(tag: int):
    """A rational (tag 30) is reduced by the gcd of its parts, quadratic in their size: two
    256 KiB integers took 3.2 s, a 4 MiB answer minutes."""
    with pytest.raises(cbor2.CBORDecodeError, match=f"semantic tag {tag}"):
        loads_cbor(cbor2.dumps({"x": cbor2.CBORTag(tag, [1, 2])}))
    assert loads_cbor(cbor2.dumps(cbor2.CBORTag(40000, 1))) == cbor2.CBORTag(40000, 1)
    assert loads_cbor(cbor2.dumps([2**70, -(2**70)])) == [2**70, -(2**70)]  # tags 2, 3


def test_loads_cbor_nests_at_most_64_deep():
    assert loads_cbor(b"\x81" * 63 + b"\x00") is not None
    with pytest.raises(cbor2.CBORDecodeError, match="depth"):
        loads_cbor(b"\x81" * 65 + b"\x00")


def _array(count: int, item: bytes) -> bytes:
    return b"\x9a" + count.to_bytes(4, "big") + item * count


@pytest.mark.parametrize(
    "item",
    [b"\xa0", b"\x80", b"\x40", b"\x18\x20", b"\xf9\x00\x00", b"\x5f\xff"],
    ids=["empty-map", "empty-array", "empty-bytes", "uint8", "half-float", "indefinite-bytes"],
)
def test_loads_cbor_decodes_at_most_max_items(item: bytes) -> None:
    """Counted from the heads before cbor2 makes an object of any; the array counts as one."""
    from blindai._documents import MAX_ITEMS

    per = 2 if item == b"\x5f\xff" else 1  # an indefinite string's head and its break
    assert len(loads_cbor(_array(MAX_ITEMS // per - 1, item))) == MAX_ITEMS // per - 1
    with pytest.raises(cbor2.CBORDecodeError, match=f"more than {MAX_ITEMS} CBOR items"):
        loads_cbor(_array(MAX_ITEMS // per, item))


def test_loads_cbor_skips_string_contents_when_counting() -> None:
    """Long byte and text strings are one item each, whatever bytes they hold."""
    body = cbor2.dumps({"a": b"\xa0" * (4 << 20), "b": "\x00" * (2 << 20)})
    assert loads_cbor(body) == {"a": b"\xa0" * (4 << 20), "b": "\x00" * (2 << 20)}
    assert loads_cbor(bytearray(body)) == loads_cbor(memoryview(body))


@pytest.mark.parametrize("tail", [b"\x5b" + b"\xff" * 8, b"\x1c", b"\x59\x01"])
def test_loads_cbor_leaves_malformed_heads_to_cbor2(tail: bytes) -> None:
    """A string longer than the document, a reserved head, a cut argument: cbor2's error."""
    with pytest.raises(cbor2.CBORDecodeError):
        loads_cbor(b"\x82" + cbor2.dumps(bytes(1 << 20)) + tail)
