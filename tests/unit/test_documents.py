"""JSON and TOML from anyone: too deep a nesting is the parser's own error, not RecursionError."""

from __future__ import annotations

import json
import sys

import pytest

from blindai._documents import TOO_DEEP, loads_json, loads_toml

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
