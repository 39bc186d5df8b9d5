"""HTTP status mapping for BlindAI errors: the one table, kept in the server."""

from __future__ import annotations

from blindai.errors import (
    BlindAIError,
    CollateralUnavailable,
    ConfigurationError,
    EvidenceError,
    ModelNotFound,
    ModelNotReady,
    PipelineError,
    ProtocolError,
    ServerError,
)

__all__ = ["status_for"]

_STATUS: tuple[tuple[type[BlindAIError], int], ...] = (
    (ProtocolError, 400),
    (PipelineError, 400),
    (ModelNotFound, 404),
    (ModelNotReady, 503),
    (EvidenceError, 503),
    (CollateralUnavailable, 503),
    (ConfigurationError, 500),
)


def status_for(exc: BlindAIError) -> int:
    """The HTTP status for an error raised while handling a request."""
    if isinstance(exc, ServerError):
        return exc.status_code
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def message_for(exc: BlindAIError) -> str:
    """The short message sent to the client (never request data)."""
    if isinstance(exc, ServerError):
        return exc.message
    return str(exc)
