"""Wording shared by the server's messages: counts and configured limits."""

from __future__ import annotations

__all__ = ["MAX_MESSAGE", "clipped", "count", "limit", "were"]

_UNITS = (("GiB", 30), ("MiB", 20), ("KiB", 10))
MAX_MESSAGE = 1024
"""Longest error message a client is sent (characters)."""


def clipped(message: str, most: int = MAX_MESSAGE) -> str:
    """``message`` cut to ``most`` characters, the cut marked: messages quote the names,
    versions, datatypes and shapes a request gave, which may be megabytes long (over gRPC, a
    message longer than the client's metadata limit replaced the error by RESOURCE_EXHAUSTED)."""
    return message if len(message) <= most else message[: most - 3] + "..."


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 input``, ``2 inputs`` (``plural`` for irregular nouns)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def were(n: int) -> str:
    """``was`` for one, ``were`` for any other count."""
    return "was" if n == 1 else "were"


def limit(value: int, field: str) -> str:
    """A byte limit as configured: ``the 64 MiB limit (--max-request-bytes 67108864)``."""
    size = f"{value}-byte"
    for unit, shift in _UNITS:
        if value >= 1 << shift and value % (1 << shift) == 0:
            size = f"{value >> shift} {unit}"
            break
    return f"the {size} limit (--{field.replace('_', '-')} {value})"
