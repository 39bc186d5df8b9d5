"""Per-connection attestation: every new TLS connection is admitted only once its peer is verified.

Behind a load balancer each TCP connection may reach another replica. :class:`PeerGate` runs
on every new connection, after the TLS handshake and before any request:

1. the peer certificate of *this* connection (``getpeercert(binary_form=True)``) is looked up
   in the :class:`AttestationCache`; an unexpired entry admits the connection at once;
2. otherwise ``GET /attestation`` (with ``?nonce=`` when freshness is asked) is the first
   request on the connection; the reply must name the same certificate, its evidence must
   verify against the policy, and its report data must bind that certificate (and the nonce);
3. when the policy requires a GPU, ``GET /gpu-evidence`` on the same connection must verify too;
4. the verified replica is cached by its certificate's SHA-256 for ``ttl`` seconds.

Any failure closes the connection before a request is sent on it, is counted in
:class:`AttestationStats`, logged (one line, no data), and raised as a typed error. A server
without ``/attestation`` (BlindAI before 1.0, the original 0.6 server) is verified the 0.6 way
on its unattested port, and then only the certificate found there is admitted.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

from blindai.attestation import Verifier, simulation
from blindai.attestation.binding import check_binding
from blindai.attestation.claims import EvidenceKind, VerifiedClaims
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.kinds import server_kind
from blindai.attestation.policy import Policy
from blindai.client._answers import raise_for
from blindai.client._http11 import Exchange, HttpResponse
from blindai.errors import (
    BindingError,
    BlindAIError,
    ConfigurationError,
    PolicyError,
    VerificationError,
)
from blindai.protocol.attestation import AttestationReply, decode_reply, request_path

if TYPE_CHECKING:
    from blindai.attestation._collateral import CollateralSource
    from blindai.attestation._kds import SnpCertificateSource
    from blindai.attestation.nvidia_gpu import NvidiaGpuClaims, NvidiaGpuVerifier
    from blindai.client._attest import Attested

__all__ = [
    "AttestationCache",
    "AttestationStats",
    "PeerAttestation",
    "PeerGate",
    "VerifyOptions",
    "verify_reply",
]

_log = logging.getLogger("blindai.client")
_DCAP_KINDS = (EvidenceKind.SGX, EvidenceKind.TDX)
NONCE_BYTES = 32
DEFAULT_TTL_S = 300.0


@dataclass(frozen=True)
class PeerAttestation:
    """A replica verified on a connection: its certificate, verified claims and server info."""

    cert_der: bytes
    claims: VerifiedClaims
    server_info: dict[str, Any] = field(default_factory=dict, compare=False)
    gpu_claims: NvidiaGpuClaims | None = None
    fresh: bool = False
    """Whether the evidence was collected for a nonce of this client."""

    @property
    def digest(self) -> bytes:
        """SHA-256 of the certificate: the cache key."""
        return hashlib.sha256(self.cert_der).digest()


class AttestationCache:
    """Verified replicas by certificate hash, each for ``ttl`` seconds (thread-safe).

    A :class:`~blindai.client.Connection` makes its own unless one is given to
    :func:`~blindai.client.connect` (``attestation_cache=``), e.g. to share verifications
    between connections to the same replicas. Entries are kept per verification scope (the
    policy, the verifiers, simulation and freshness), so a connection never reuses what was
    verified under other settings. At most ``max_entries`` are kept (the oldest go first);
    ``clock`` (monotonic seconds) is injectable for tests.
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL_S,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ConfigurationError("an attestation cache needs ttl > 0 and max_entries >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[object, bytes], tuple[float, PeerAttestation]] = (
            OrderedDict()
        )

    def get(self, scope: object, digest: bytes) -> PeerAttestation | None:
        """The unexpired entry for a certificate digest in ``scope``, if any."""
        with self._lock:
            found = self._entries.get((scope, digest))
            if found is None:
                return None
            if self._clock() >= found[0]:
                del self._entries[(scope, digest)]
                return None
            return found[1]

    def put(self, scope: object, peer: PeerAttestation) -> None:
        """Keep ``peer`` for ``ttl`` seconds from now."""
        with self._lock:
            key = (scope, peer.digest)
            self._entries.pop(key, None)
            self._entries[key] = (self._clock() + self.ttl, peer)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def peers(self, scope: object | None = None) -> list[PeerAttestation]:
        """The unexpired entries (of ``scope``, when given), oldest first."""
        now = self._clock()
        with self._lock:
            return [
                peer
                for (s, _), (expiry, peer) in self._entries.items()
                if now < expiry and (scope is None or s == scope)
            ]

    def clear(self) -> None:
        """Forget every entry: the next connection to each replica is verified again."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


@dataclass(frozen=True)
class AttestationStats:
    """What a connection's gate did: replicas verified, connections admitted from the cache,
    and connections refused (closed before any request)."""

    verified: int = 0
    reused: int = 0
    refused: int = 0


@dataclass(frozen=True)
class VerifyOptions:
    """How a peer's evidence is verified (the arguments of :func:`~blindai.client.connect`)."""

    simulation_mode: bool
    policy: Policy | None
    verifier: Verifier | None = None
    collateral_fetcher: CollateralSource | None = None
    snp_certificate_source: SnpCertificateSource | None = None
    gpu_verifier: NvidiaGpuVerifier | None = None
    simulation_option: str = "simulation_mode=True"
    now: Callable[[], datetime] | None = None

    def scope(self, *, fresh: bool) -> object:
        """The cache scope: what verification depends on (verifiers by identity)."""
        return (
            self.simulation_mode,
            fresh,
            repr(self.policy),
            id(self.verifier),
            id(self.gpu_verifier),
        )

    def when(self) -> datetime:
        """The verification time."""
        return self.now() if self.now is not None else datetime.now(timezone.utc)


def _kind(reply: AttestationReply) -> EvidenceKind:
    if reply.evidence.startswith(simulation.MAGIC):
        return EvidenceKind.SIMULATION
    try:
        kind = EvidenceKind(reply.kind)
    except ValueError:
        from blindai.errors import EvidenceError

        raise EvidenceError(f"unknown evidence kind {reply.kind[:40]!r}") from None
    return server_kind(kind)  # a GPU's report never stands for the server's TEE


def _verify_simulated(options: VerifyOptions, evidence: bytes, when: datetime) -> VerifiedClaims:
    chosen = options.verifier
    if chosen is None or chosen.kind is not EvidenceKind.SIMULATION:
        chosen = simulation.UnsafeSimulationVerifier()
    return chosen.verify(evidence, None, now=when)


def _endorsements(
    reply: AttestationReply, kind: EvidenceKind, options: VerifyOptions
) -> Endorsements:
    found = Endorsements(reply.collateral, reply.certificates)
    if found.collateral is None and kind in _DCAP_KINDS and options.collateral_fetcher:
        _log.info("the server sent no %s collateral: fetching it with the given source", kind.value)
        collateral = options.collateral_fetcher.for_quote(reply.evidence).to_json()
        found = Endorsements(collateral, found.certificates)
    if (
        not found.certificates
        and kind is EvidenceKind.SEV_SNP
        and options.snp_certificate_source is not None
    ):
        _log.info("the server sent no SEV-SNP certificates: fetching them with the given source")
        certs = options.snp_certificate_source.for_report(reply.evidence)
        found = Endorsements(found.collateral, certs)
    return found


def _verify_real(
    kind: EvidenceKind, reply: AttestationReply, options: VerifyOptions, when: datetime
) -> VerifiedClaims:
    if kind is EvidenceKind.SIMULATION:
        raise VerificationError(
            "the server sent SIMULATED evidence (no TEE): refusing outside simulation mode "
            f"(pass {options.simulation_option} only for development)"
        )
    if options.policy is None:
        raise ConfigurationError(
            "outside simulation mode a policy is required: pass hazmat_manifest_path= a TOML "
            "policy file naming the expected measurement"
        )
    from blindai.attestation import verifier_for

    chosen = options.verifier or verifier_for(kind)
    if chosen.kind is not kind:
        raise VerificationError(
            f"the server sent {kind.value} evidence; the given verifier takes {chosen.kind.value}"
        )
    return chosen.verify(
        reply.evidence,
        options.policy.for_kind(kind),
        now=when,
        endorsements=_endorsements(reply, kind, options),
    )


def verify_reply(
    reply: AttestationReply, peer_cert: bytes, *, nonce: bytes | None, options: VerifyOptions
) -> VerifiedClaims:
    """Verify a ``/attestation`` reply for the connection whose peer certificate is ``peer_cert``.

    (1) the reply names that certificate; (2) the evidence is authentic and satisfies the
    policy (or, in simulation mode, is simulated); (3) its report data binds the certificate,
    and ``nonce`` when one was sent.
    """
    if reply.certificate != peer_cert:
        raise BindingError(
            "the attestation reply names another certificate than the one this TLS connection "
            "presents: is TLS terminated in front of the server (a proxy, an Ingress)?"
        )
    if nonce is not None and reply.nonce != nonce:
        raise BindingError("the attestation reply is not for this connection's nonce")
    when = options.when()
    kind = _kind(reply)
    if options.simulation_mode and kind is not EvidenceKind.SIMULATION:
        raise VerificationError(
            f"{options.simulation_option} accepts only a simulation server; this one sent "
            f"{kind.value} evidence: refusing. Verify it against a policy, without "
            f"{options.simulation_option}."
        )
    if options.simulation_mode:
        claims = _verify_simulated(options, reply.evidence, when)
    else:
        claims = _verify_real(kind, reply, options, when)
    check_binding(
        peer_cert,
        report_data=claims.report_data,
        public_key=getattr(claims, "public_key", None),
        nonce=nonce,
    )
    return claims


class _OnConnection:
    """The just-opened connection, as :func:`~blindai.client._attest.attest_gpu` reads it."""

    def __init__(self, exchange: Exchange, cert_der: bytes) -> None:
        self._exchange = exchange
        self.cert_der = cert_der

    def request(self, method: str, path: str, *, max_body: int | None = None) -> HttpResponse:
        del max_body  # what an exchange reads is capped by MAX_UNVERIFIED_BODY already
        return self._exchange(method, path)


def _not_served(resp: HttpResponse) -> bool:
    """A 404/405 our routes did not write: the server has no ``/attestation`` route."""
    return resp.status in (404, 405) and not resp.headers.get("content-type", "").startswith(
        "application/cbor"
    )


class PeerGate:
    """Admits new connections whose peer is attested; shared by a connection's transports.

    ``legacy`` runs the 0.6 flow on the unattested port, for servers without
    ``/attestation``. ``nonce``: every verification asks for evidence over a new random nonce.
    """

    def __init__(
        self,
        options: VerifyOptions,
        *,
        cache: AttestationCache | None = None,
        nonce: bool = False,
        legacy: Callable[[], Attested] | None = None,
    ) -> None:
        self.options = options
        self.cache = cache if cache is not None else AttestationCache()
        self.nonce = nonce
        self.scope = options.scope(fresh=nonce)
        self._legacy = legacy
        self._lock = threading.Lock()
        self._stats = AttestationStats()

    @property
    def stats(self) -> AttestationStats:
        """Counts so far."""
        with self._lock:
            return self._stats

    def _count(self, **delta: int) -> None:
        with self._lock:
            s = self._stats
            self._stats = AttestationStats(
                s.verified + delta.get("verified", 0),
                s.reused + delta.get("reused", 0),
                s.refused + delta.get("refused", 0),
            )

    def peers(self) -> list[PeerAttestation]:
        """The replicas verified in this gate's scope and not expired."""
        return self.cache.peers(self.scope)

    def admit(self, cert_der: bytes, exchange: Exchange, label: str) -> PeerAttestation:
        """The attestation of the peer presenting ``cert_der``; raises (and counts) refusals."""
        digest = hashlib.sha256(cert_der).digest()
        cached = self.cache.get(self.scope, digest)
        if cached is not None:
            self._count(reused=1)
            return cached
        try:
            peer = self._verify(cert_der, exchange)
        except BlindAIError as exc:
            self._count(refused=1)
            _log.warning(
                "refused %s (certificate %s...): %s", label, digest.hex()[:16], exc.diagnostics()
            )
            raise
        self.cache.put(self.scope, peer)
        self._count(verified=1)
        _log.info("verified %s (certificate %s...)", label, digest.hex()[:16])
        return peer

    def _verify(self, cert_der: bytes, exchange: Exchange) -> PeerAttestation:
        nonce = secrets.token_bytes(NONCE_BYTES) if self.nonce else None
        resp = exchange("GET", request_path(nonce))
        if _not_served(resp):
            return self._verify_legacy(cert_der, exchange)
        mock = "mock" in resp.headers.get("server", "").lower()
        if mock and not self.options.simulation_mode:
            raise VerificationError(
                "the server runs in SIMULATION mode (no TEE; its Server header says mock): "
                f"refusing. Pass {self.options.simulation_option} only for development."
            )
        if not 200 <= resp.status < 300:
            raise_for(resp, "GET /attestation")
        reply = decode_reply(resp.body)
        claims = verify_reply(reply, cert_der, nonce=nonce, options=self.options)
        # the reply came over this connection, whose certificate the evidence binds: what it
        # states of the server's configuration comes from the attested code
        self._check_server(reply.info)
        gpu = self._verify_gpu(cert_der, exchange)
        return PeerAttestation(cert_der, claims, reply.info, gpu, fresh=nonce is not None)

    def _check_server(self, info: Mapping[str, Any]) -> None:
        """PolicyError when the policy's ``[server]`` section is not what the server states."""
        policy = self.options.policy
        required = None if policy is None else policy.server
        if required is not None:
            violations = required.check(info)
            if violations:
                raise PolicyError(violations)

    def _verify_gpu(self, cert_der: bytes, exchange: Exchange) -> NvidiaGpuClaims | None:
        from blindai.client._attest import attest_gpu, gpu_required

        policy = self.options.policy
        if policy is None or not gpu_required(policy):
            return None
        channel = cast(Any, _OnConnection(exchange, cert_der))
        return attest_gpu(
            channel, policy=policy, now=self.options.when(), verifier=self.options.gpu_verifier
        )

    def _verify_legacy(self, cert_der: bytes, exchange: Exchange) -> PeerAttestation:
        if self._legacy is None:
            raise VerificationError("the server serves no GET /attestation to verify it by")
        if self.nonce:
            raise VerificationError(
                "fresh evidence was asked (nonce), but the server serves no GET /attestation: "
                "it can only show evidence it made in advance"
            )
        policy = self.options.policy
        if policy is not None and policy.server is not None:
            raise VerificationError(
                "the policy has a [server] section, but the server serves no GET /attestation: "
                "it cannot state its configuration over the attested channel"
            )
        found = self._legacy()
        if found.cert_der != cert_der:
            raise BindingError(
                "the server serves no GET /attestation, and this connection's certificate is "
                "not the one its unattested port vouches for (another replica?)"
            )
        gpu = self._verify_gpu(cert_der, exchange)
        return PeerAttestation(found.cert_der, found.claims, found.server_info, gpu)
