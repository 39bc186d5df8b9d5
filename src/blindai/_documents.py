"""JSON and TOML documents that anyone may have written: too deep a nesting is invalid input.

The standard library's parsers recurse once per nested array or table, so a few kilobytes of
``[[[[...`` make them raise ``RecursionError`` (a ``RuntimeError``), which no caller expecting
a ``ValueError`` for a bad document catches: a server answered such a v2 repository request
with 500, and a client reading collateral got a stack error instead of ``CollateralError``.
These wrappers turn it into the parser's own error type (both are ``ValueError``\\s), so every
caller's existing ``except ValueError`` refuses the document with its usual message.
"""

from __future__ import annotations

import json
import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the tests run on 3.11
    import tomli as tomllib

__all__ = ["TOO_DEEP", "loads_json", "loads_toml"]

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
