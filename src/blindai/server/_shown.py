"""A name a model or a request chose, as the server's messages show it: short and quoted.

A model's input and output names are the model author's: one may be megabytes long, and a
model may have thousands. A refusal quoting them whole made every request that named an input
wrongly build, and send, an answer the size of the model's names (40 MB a request for a
76 MB model of 400 inputs).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["NAMES_SHOWN", "NAME_SHOWN", "shown", "shown_names"]

NAME_SHOWN = 64
"""Characters of one name a message shows (then ``...``)."""
NAMES_SHOWN = 16
"""Names a message lists (then how many there are)."""


def shown(text: str) -> str:
    """``text`` quoted (``repr``), cut to :data:`NAME_SHOWN` characters."""
    return repr(text[:NAME_SHOWN] + ("..." if len(text) > NAME_SHOWN else ""))


def shown_names(names: Iterable[str]) -> str:
    """A list of names as a message shows it: at most :data:`NAMES_SHOWN`, each cut."""
    listed = list(names)
    more = f", ... ({len(listed)} in all)" if len(listed) > NAMES_SHOWN else ""
    return "[" + ", ".join(shown(n) for n in listed[:NAMES_SHOWN]) + more + "]"
