"""The one exception tree of BlindAI.

::

    BlindAIError
    ├── EvidenceError          malformed or unsupported evidence
    ├── VerificationError      the evidence is not authentic, or not acceptable
    │   ├── ChainError         a certificate chain does not lead to a pinned root
    │   ├── SignatureError     a signature does not verify
    │   ├── CollateralError    collateral (TCB info, CRLs, ...) is invalid or out of date
    │   ├── PolicyError        .violations: the claims do not satisfy the policy
    │   └── BindingError       TLS key or nonce not bound to the evidence
    ├── CollateralUnavailable  collateral could not be fetched (fail closed)
    ├── ProtocolError          wire version or format
    ├── PipelineError          a pipeline spec, its files, or a raw input cannot be used
    ├── ServerError            .status_code: the server answered with an error
    │   ├── ModelNotFound
    │   ├── ModelNotReady
    │   └── InferenceFailed
    ├── NetworkError           the server cannot be reached, or the connection broke
    │   └── RequestTimeout     no answer within the timeout
    └── ConfigurationError     unusable settings, arguments or policy files
        └── WrongPort          .port, .role, .found: a port given for one role serves another

This module imports no web framework: HTTP status mapping lives in the server.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BindingError",
    "BlindAIError",
    "ChainError",
    "CollateralError",
    "CollateralUnavailable",
    "ConfigurationError",
    "EvidenceError",
    "InferenceFailed",
    "ModelNotFound",
    "ModelNotReady",
    "NetworkError",
    "PipelineError",
    "PolicyError",
    "ProtocolError",
    "RequestTimeout",
    "ServerError",
    "SignatureError",
    "VerificationError",
    "Violation",
    "WrongPort",
]


class BlindAIError(Exception):
    """Root of every error BlindAI raises on purpose."""

    def diagnostics(self) -> str:
        """One readable line for the CLI (no traceback)."""
        name = type(self).__name__
        text = str(self) or (self.__doc__ or "").strip().splitlines()[0]
        return f"{name}: {text}"


class EvidenceError(BlindAIError):
    """Raised when evidence is malformed, truncated or of an unsupported kind or version."""


class VerificationError(BlindAIError):
    """Raised when evidence parses but is not authentic or not acceptable."""


class ChainError(VerificationError):
    """Raised when a certificate chain is broken, expired, or does not end at a pinned root."""


class SignatureError(VerificationError):
    """Raised when a signature over evidence or collateral does not verify."""


class CollateralError(VerificationError):
    """Raised when collateral is invalid, mismatched or outside its validity window."""


@dataclass(frozen=True)
class Violation:
    """One way in which verified claims fail a policy."""

    field: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.field}: expected {self.expected}, got {self.actual}"


class PolicyError(VerificationError):
    """Raised when authentic evidence does not satisfy the policy; lists every violation."""

    def __init__(self, violations: list[Violation] | tuple[Violation, ...]) -> None:
        self.violations: tuple[Violation, ...] = tuple(violations)
        super().__init__("; ".join(str(v) for v in self.violations) or "policy violated")

    def diagnostics(self) -> str:
        """One line per violation."""
        return "\n".join(f"PolicyError: {v}" for v in self.violations)


class BindingError(VerificationError):
    """Raised when the TLS certificate (or a nonce) is not bound to the evidence's report data."""


class CollateralUnavailable(BlindAIError):
    """Raised when collateral could not be obtained (network failure or cache miss); fail closed."""


class ProtocolError(BlindAIError):
    """Raised when a message does not follow the wire protocol, or versions do not match."""


class PipelineError(BlindAIError):
    """Raised when a pipeline spec or one of its files is malformed or over a limit, or when a
    raw input (text, image, audio) cannot be decoded or preprocessed by the model's pipeline."""


class ServerError(BlindAIError):
    """Raised when the server answers a request with an error status."""

    def __init__(self, message: str, *, status_code: int) -> None:
        self.status_code = status_code
        self.message = message
        super().__init__(f"{status_code}: {message}")


class ModelNotFound(ServerError):
    """Raised when the server knows no model by that id, hash or name (404)."""


class ModelNotReady(ServerError):
    """Raised when the model exists but cannot serve yet (503)."""


class InferenceFailed(ServerError):
    """Raised when the server rejected the inputs or the model failed to run them."""


class ConfigurationError(BlindAIError):
    """Raised for unusable settings, arguments or policy files."""


class NetworkError(BlindAIError):
    """Raised when the server cannot be reached, or a connection to it fails or breaks."""


class RequestTimeout(NetworkError):
    """Raised when connecting or waiting for an answer takes longer than the timeout."""


class WrongPort(ConfigurationError):
    """Raised when a port given for one role (e.g. the unattested port) serves another one.

    ``role`` is the role the port was given for (``"unattested"``, ``"attested"`` or
    ``"management"``); ``found`` says what answered there instead.
    """

    def __init__(self, message: str, *, port: int, role: str, found: str) -> None:
        self.port = port
        self.role = role
        self.found = found
        super().__init__(message)
