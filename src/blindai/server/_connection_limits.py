"""The limits of one port's connections, and what their answers not yet taken are counted in.

Built by the server from its settings and applied by the connections' HTTP protocol
(``_limited_http``); the limits themselves are described in ``connections``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ANSWERED_KEY", "BUDGET_KEY", "AnswerBudget", "ConnectionLimits", "answered"]

ANSWERED_KEY = "blindai.answered"
"""The scope entry holding the status the connection itself answered a request with, when it
did so before the app could (the 503 of a request cut at ``--shutdown-timeout``, the 400 of
a body whose chunked framing breaks midway): what the
audit log, the access log and the metrics record, not what the app answers afterwards to
nobody (499 for a body it no longer receives, 422 for a run it terminated)."""


def answered(scope: Mapping[str, Any], status: int) -> int:
    """The status a request's client was answered: :data:`ANSWERED_KEY`'s, else ``status``
    (the one the app sent)."""
    found = scope.get(ANSWERED_KEY)
    return found if isinstance(found, int) else status


BUDGET_KEY = "blindai.budget_key"
"""The scope entry naming the tenant's key a request's bytes are counted for (set by the body
budget's middleware; absent: no tenant's)."""


class AnswerBudget(Protocol):
    """What holds the bytes of answers not yet taken (the server's body budget)."""

    def hold(self, size: int, key: str | None = None) -> None:
        """Count ``size`` bytes, even beyond the budget (they are in memory already), for the
        tenant's ``key`` whose request they answer (None: no tenant's)."""

    def give(self, size: int, key: str | None = None) -> None:
        """Stop counting ``size`` bytes (for ``key``)."""


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    """Limits on the connections of one port (the server builds them from its settings)."""

    max_header_bytes: int
    """Request line and headers, in bytes."""
    max_header_count: int
    """Header fields of one request."""
    header_timeout_s: float
    """Time for a request's headers (and for a TLS handshake) to arrive."""
    body_timeout_s: float
    """Time for a request body to arrive, before the allowance for its size."""
    body_min_rate: int
    """Bytes a second a body must keep up: each ``body_min_rate`` bytes adds one second."""
    keep_alive_timeout_s: int
    """How long an idle connection stays open between requests."""
    max_connections: int
    """Open connections on one port (TLS handshakes included)."""
    max_body_bytes: int
    """The largest body a request may carry. One answered before its body was read whole (a
    413 from its declared length, a 404) has at most ``DRAIN_BYTES`` more of its body read and
    dropped (see ``_limited_http``), so that a client sending a small body whole can read the
    answer; never more than this many bytes, then the connection is closed."""
