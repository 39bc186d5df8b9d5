"""``GET /attestation`` on the attested ports: this replica's evidence for the very connection.

Every TLS port of a server presents the one certificate of its
:class:`~blindai.server.tls.TlsIdentity`, so the evidence binding that certificate is the
evidence for the connection that asks, whichever replica a load balancer sent it to. The wire
is :mod:`blindai.protocol.attestation`.

Without a nonce the reply carries the evidence cached by the evidence service (refreshed every
minute). With one, new evidence is collected for it: that costs the TEE a quote or report
each time, so at most ``most_pending`` collections wait at once and further requests are
answered 503 at once (the client tries another connection later); and at most
``fresh_evidence_per_second`` start a second, the whole server together, further requests
answered 503 with ``Retry-After``. They run in the given worker pool, never on the event loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from blindai.errors import ServerBusy
from blindai.protocol.attestation import (
    ATTESTATION_PATH,
    AttestationReply,
    encode_reply,
    parse_nonce,
)
from blindai.server._workers import WorkerPool
from blindai.server.attesters.base import Attester
from blindai.server.evidence import Collected
from blindai.server.protocols.v06.routes import cbor_errors
from blindai.server.protocols.v06.wire import CBOR

__all__ = [
    "EvidenceSource",
    "FreshEvidenceLimit",
    "FreshEvidenceRefused",
    "attestation_reply",
    "attestation_route",
]


class EvidenceSource(Protocol):
    """What the route needs of the server's evidence service."""

    @property
    def cert_der(self) -> bytes:
        """The certificate every TLS port presents."""
        ...

    @property
    def attester(self) -> Attester:
        """The platform's attester (kind and endorsements)."""
        ...

    def collected(self) -> Collected:
        """Cached evidence binding the certificate, with its endorsements."""
        ...

    def fresh(self, nonce: bytes) -> Collected:
        """New evidence binding the certificate and ``nonce``, with its endorsements."""
        ...


class FreshEvidenceRefused(ServerBusy):
    """A fresh-evidence request over the server's rate (503, ``Retry-After``): try again."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FreshEvidenceLimit:
    """Bounds fresh-evidence collections (event loop only): at most ``most`` in progress, and
    at most ``per_second`` started a second, the whole server together (a token bucket
    holding one second's worth, at least one): anonymous clients kept the TEE producing
    reports back to back, four at a time, for as long as they liked.

    ``clock``: seconds, monotonic (injected by tests)."""

    def __init__(
        self,
        most: int,
        *,
        per_second: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if most < 1:
            raise ValueError("most must be at least 1")
        if not per_second > 0:
            raise ValueError("per_second must be positive")
        self.most = most
        self.pending = 0
        self.per_second = per_second
        self._burst = max(1.0, per_second)
        self._tokens = self._burst
        self._clock = clock
        self._at = clock()

    def enter(self) -> None:
        """Take a place, or raise ServerBusy (503) when all are taken or the rate is spent."""
        if self.pending >= self.most:
            raise ServerBusy(
                f"{self.most} fresh-evidence requests are already pending "
                "(max_pending_fresh_evidence): try again"
            )
        now = self._clock()
        if not math.isinf(self.per_second):
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens < 1:
            wait = (1 - self._tokens) / self.per_second
            raise FreshEvidenceRefused(
                f"this server makes at most {self.per_second:g} fresh evidence reports a second "
                f"(fresh_evidence_per_second): try again in {wait:.1f} s, or ask without a nonce",
                retry_after_s=wait,
            )
        if not math.isinf(self.per_second):
            self._tokens -= 1
        self.pending += 1

    def leave(self) -> None:
        """Give a place back."""
        self.pending -= 1


def attestation_reply(
    source: EvidenceSource, *, nonce: bytes | None, info: dict[str, Any]
) -> AttestationReply:
    """Collect the reply (blocking: device I/O, collateral fetches)."""
    collected = source.collected() if nonce is None else source.fresh(nonce)
    endorsements = collected.endorsements()  # collected with that evidence, not the last
    return AttestationReply(
        kind=source.attester.kind.value,
        certificate=source.cert_der,
        evidence=collected.evidence,
        nonce=nonce,
        collateral=endorsements.collateral,
        certificates=tuple(endorsements.certificates),
        info=info,
    )


def attestation_route(
    source: EvidenceSource,
    workers: WorkerPool,
    *,
    info: Callable[[], dict[str, Any]],
    limit: FreshEvidenceLimit,
) -> Route:
    """The ``GET /attestation`` route; evidence is collected in ``workers``."""

    async def attestation(request: Request) -> Response:
        nonce = parse_nonce(request.query_params.get("nonce"))
        if nonce is None:
            reply = await workers.run(attestation_reply, source, nonce=None, info=info())
        else:
            limit.enter()
            try:
                reply = await workers.run(attestation_reply, source, nonce=nonce, info=info())
            finally:
                limit.leave()
        return Response(encode_reply(reply), media_type=CBOR)

    return Route(ATTESTATION_PATH, cbor_errors(attestation), methods=["GET"])
