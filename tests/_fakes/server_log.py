"""Reading a test server's log: which requests reached the attested ports."""

from __future__ import annotations

import re

_ATTESTED = re.compile(r"blindai\.access: (?:attested|management) (\S+ \S+)")


def attested_requests(log: str) -> list[str]:
    """``METHOD /path`` of every request the attested or management port answered."""
    return _ATTESTED.findall(log)
