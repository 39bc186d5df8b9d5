"""Reading a test server's log: which requests reached the attested ports."""

from __future__ import annotations

import re

_ATTESTED = re.compile(r"blindai\.access: (?:attested|management) (\S+ \S+)")


def attested_requests(log: str) -> list[str]:
    """``METHOD /path`` of every request the attested or management port answered."""
    return _ATTESTED.findall(log)


ATTESTATION_REQUESTS = frozenset({"GET /attestation", "GET /gpu-evidence"})
"""What a client asks on a new connection before anything else: its evidence."""


def requests_beyond_attestation(log: str, before: list[str]) -> list[str]:
    """The attested requests logged since ``before``, other than :data:`ATTESTATION_REQUESTS`."""
    return [r for r in attested_requests(log)[len(before) :] if r not in ATTESTATION_REQUESTS]
