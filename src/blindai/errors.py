"""The one exception tree of BlindAI.

::

    BlindAIError                500  (HTTP status, where the server answers with it)
    ├── EvidenceError           503  malformed or unsupported evidence
    ├── VerificationError            the evidence is not authentic, or not acceptable
    │   ├── ChainError               a certificate chain does not lead to a pinned root
    │   ├── SignatureError           a signature does not verify
    │   ├── CollateralError          collateral (TCB info, CRLs, ...) is invalid or out of date
    │   ├── PolicyError              .violations: the claims do not satisfy the policy
    │   └── BindingError             TLS key or nonce not bound to the evidence
    ├── CollateralUnavailable   503  collateral could not be fetched (fail closed)
    ├── ProtocolError           400  wire version or format
    ├── PipelineError           400  a pipeline spec, its files, or a raw input cannot be used
    ├── ServerError             500  .status_code: the server answered with an error
    │   ├── InvalidInput        400  a malformed request, or inputs or a model that do not fit
    │   │   └── PayloadTooLarge 413  a body or model over the server's configured limit
    │   ├── ModelNotFound       404  no model by that id, name or hash
    │   ├── InferenceFailed     422  the model failed on inputs that fit it
    │   ├── ModelNotReady       503  the model exists but cannot serve yet
    │   ├── RegistryFull        507  the server holds as many models as it may
    │   ├── InferenceTimeout    504  the run went past the server's run timeout and was stopped
    │   ├── AuthenticationError 401  no API key, or not a valid one
    │   ├── PermissionDenied    403  not allowed: a key that may not do this, model export off
    │   ├── KeyNotFound         404  no API key by that name
    │   ├── AlreadyExists       409  a name already taken
    │   └── ServerBusy          503  too many requests of that kind in progress: try again
    ├── NetworkError                 the server cannot be reached, or the connection broke
    │   └── RequestTimeout           no answer within the timeout
    └── ConfigurationError      500  unusable settings, arguments or policy files
        └── WrongPort                .port, .role, .found: a port given for one role serves another

The HTTP status of each error is its class's ``http_status``: the one table, read by the
server to answer (500 for a class that sets none) and by the client to pick the class of an
answer that does not name it. The server names the class in the ``X-BlindAI-Error`` header of
every error reply (docs/server.md, "Errors on the wire"); the client raises that same class.
This module imports no web framework.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from blindai.escape import escaped

__all__ = [
    "AlreadyExists",
    "AuthenticationError",
    "BindingError",
    "BlindAIError",
    "ChainError",
    "CollateralError",
    "CollateralUnavailable",
    "ConfigurationError",
    "EvidenceError",
    "InferenceFailed",
    "InferenceTimeout",
    "InvalidInput",
    "KeyNotFound",
    "ModelNotFound",
    "ModelNotReady",
    "NetworkError",
    "PayloadTooLarge",
    "PermissionDenied",
    "PipelineError",
    "PolicyError",
    "ProtocolError",
    "RegistryFull",
    "RequestTimeout",
    "ServerBusy",
    "ServerError",
    "SignatureError",
    "VerificationError",
    "Violation",
    "WrongPort",
]


class BlindAIError(Exception):
    """Root of every error BlindAI raises on purpose."""

    http_status: ClassVar[int] = 500
    """The HTTP status the server answers with when this error ends a request."""

    def diagnostics(self) -> str:
        """One readable line for the CLI (no traceback): every character that is not printable
        written as its escape (``\\n``, ``\\x1b``), since a message may quote what a server or
        its evidence said, and a newline or a terminal escape there would forge lines."""
        name = type(self).__name__
        text = str(self) or (self.__doc__ or "").strip().splitlines()[0]
        return f"{name}: {escaped(text)}"


class EvidenceError(BlindAIError):
    """Raised when evidence is malformed, truncated or of an unsupported kind or version."""

    http_status = 503


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
    value: int | None = None
    """The raw register a bit violation was read from (SGX ATTRIBUTES, TDX TD attributes or
    XFAM, the SEV-SNP guest policy), whose bits ``expected`` and ``actual`` name; else None."""

    def __str__(self) -> str:
        return f"{self.field}: expected {self.expected}, got {self.actual}"


class PolicyError(VerificationError):
    """Raised when authentic evidence does not satisfy the policy; lists every violation."""

    def __init__(self, violations: list[Violation] | tuple[Violation, ...]) -> None:
        self.violations: tuple[Violation, ...] = tuple(violations)
        super().__init__("; ".join(str(v) for v in self.violations) or "policy violated")

    def diagnostics(self) -> str:
        """One line per violation (each escaped as :meth:`BlindAIError.diagnostics` does)."""
        return "\n".join(f"PolicyError: {escaped(str(v))}" for v in self.violations)


class BindingError(VerificationError):
    """Raised when the TLS certificate (or a nonce) is not bound to the evidence's report data."""


class CollateralUnavailable(BlindAIError):
    """Raised when collateral could not be obtained (network failure or cache miss); fail closed."""

    http_status = 503


class ProtocolError(BlindAIError):
    """Raised when a message does not follow the wire protocol, or versions do not match."""

    http_status = 400


class PipelineError(BlindAIError):
    """Raised when a pipeline spec or one of its files is malformed or over a limit, or when a
    raw input (text, image, audio) cannot be decoded or preprocessed by the model's pipeline.

    The server answers a request that fails this way with InvalidInput (400).
    """

    http_status = 400


class ServerError(BlindAIError):
    """Raised when the server answers a request with an error status.

    On the server, raised without a status: ``status_code`` is then the class's
    ``http_status``. On the client, ``status_code`` is the status the server answered.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = self.http_status if status_code is None else status_code
        self.message = message
        super().__init__(f"{self.status_code}: {message}")


class InvalidInput(ServerError):
    """Raised when a request is malformed, or its inputs or model do not fit (400).

    Wrong input names, dtypes or shapes, an undecodable body, a model onnxruntime cannot load.
    """

    http_status = 400


class PayloadTooLarge(InvalidInput):
    """Raised when a body, model or tensor is over the server's configured limit (413)."""

    http_status = 413


class ModelNotFound(ServerError):
    """Raised when the server knows no model by that id, name or hash (404)."""

    http_status = 404


class InferenceFailed(ServerError):
    """Raised when the model failed on inputs that fit it, or its outputs cannot be sent (422)."""

    http_status = 422


class ModelNotReady(ServerError):
    """Raised when the model exists but cannot serve yet (503)."""

    http_status = 503


class InferenceTimeout(ServerError):
    """Raised when a run went past the server's run timeout; it was stopped (504)."""

    http_status = 504


class RegistryFull(ServerError):
    """Raised when the server already holds as many models as it may (507)."""

    http_status = 507


class AuthenticationError(ServerError):
    """Raised when access control is on and the request has no API key, or an invalid one (401).

    The key travels only over attested TLS, as ``Authorization: Bearer KEY``.
    """

    http_status = 401


class PermissionDenied(ServerError):
    """Raised when a request is not allowed (403): a valid API key asking what it may not do,
    or model export on a server that does not allow it."""

    http_status = 403


class KeyNotFound(ServerError):
    """Raised when no API key has the name given (404)."""

    http_status = 404


class AlreadyExists(ServerError):
    """Raised when a name is already taken, e.g. an API key name (409)."""

    http_status = 409


class ServerBusy(ServerError):
    """Raised when the server has as many requests of one kind in progress as it may take, e.g.
    fresh-evidence collections, or when the run memory shared by the runs in progress was
    taken (503): try again."""

    http_status = 503


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
