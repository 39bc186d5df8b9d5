"""What the CLI prints of a server's words, made safe for a terminal.

Names, ids, owners, labels and output names come from the server (or from a model another
party uploaded): a newline or a terminal escape among them could forge lines or take over the
user's terminal. :func:`shown` writes each character that is not printable as its Python
escape (``\\n``, ``\\x1b``, ``\\u202e``), keeping printable text of any script as it is
(where the output's encoding lacks a character, :func:`blindai.cli.main` has it written as its
escape too).
"""

from __future__ import annotations

from blindai.escape import escaped

__all__ = ["shown"]


def shown(text: object, *, keep: str = "") -> str:
    """``text`` (its ``str``) with every non-printable character but those in ``keep``
    escaped (``keep="\\n\\t"`` for a model's generated text, whose lines are its own)."""
    return escaped(text, keep=keep)
