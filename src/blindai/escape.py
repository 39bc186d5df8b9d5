"""Text from another party made safe to print or log: one line, no terminal control.

A newline or a terminal escape in a name, an id or an error message from a server, a model or
evidence could forge lines of the CLI's output or a log, or take over a terminal.
:func:`escaped` writes each character that is not printable as its Python escape (``\\n``,
``\\x1b``, ``\\u202e``), keeping printable text of any script as it is. :func:`brief` shows a value
another party sent in a message, whatever it is.
"""

from __future__ import annotations

__all__ = ["brief", "escaped"]


def escaped(text: object, *, keep: str = "") -> str:
    """``text`` (its ``str``) with every non-printable character but those in ``keep``
    escaped."""
    value = str(text)
    if value.isprintable():
        return value
    return "".join(
        c if c.isprintable() or c in keep else c.encode("unicode_escape").decode("ascii")
        for c in value
    )


def brief(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for a message quoting a value another party
    sent. An integer of more than 4300 digits (a CBOR big integer, or one inside a list or
    map) has no ``repr``: Python raises ValueError rather than print it; it is shown by its
    type instead."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<a {type(value).__name__} too large to print>"
    return text[:limit]
