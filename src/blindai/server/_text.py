"""Wording shared by the server's messages: counts and configured limits."""

from __future__ import annotations

__all__ = ["count", "limit", "were"]

_UNITS = (("GiB", 30), ("MiB", 20), ("KiB", 10))


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
