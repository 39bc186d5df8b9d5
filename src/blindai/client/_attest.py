"""Verifying a server without sending it data: :func:`attest`, and the 0.6 flow it falls back on.

:func:`attest` (``blindai attest HOST``) verifies the server as :func:`~blindai.client.connect`
verifies each of its connections (:mod:`blindai.client._peers`): one TLS connection to the
attested port, whose first request is ``GET /attestation``; the evidence must bind the
certificate of that very connection. A server without that route is verified by
:func:`attest_server`, the 0.6 flow on the unattested port (fetch certificate and evidence,
verify, check the binding), and then only a connection presenting that certificate is accepted.

When the policy has an ``[nvidia_gpu]`` section, :func:`attest_gpu` then reads the GPU's
evidence with one ``GET /gpu-evidence`` on the same connection (whose certificate was just
verified, so the answer comes from inside the TEE) and verifies it, nonce binding included,
before anything else is sent.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from blindai._documents import loads_cbor
from blindai.attestation import Verifier, simulation
from blindai.attestation.binding import check_binding, gpu_nonce
from blindai.attestation.claims import EvidenceKind, VerifiedClaims
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.kinds import server_kind
from blindai.attestation.policy import Policy
from blindai.client._http11 import DEFAULT_MAX_BODY, MAX_UNVERIFIED_BODY
from blindai.client._peers import PeerGate, VerifyOptions
from blindai.client._ports import PortRole
from blindai.client._transport import (
    AttestedTlsTransport,
    HttpResponse,
    PinnedTlsTransport,
    PlainTransport,
)
from blindai.errors import (
    ConfigurationError,
    EvidenceError,
    ProtocolError,
    ServerError,
    VerificationError,
)

if TYPE_CHECKING:
    from blindai.attestation._collateral import CollateralSource
    from blindai.attestation._kds import SnpCertificateSource
    from blindai.attestation.nvidia_gpu import NvidiaGpuClaims, NvidiaGpuVerifier

__all__ = ["Attested", "attest", "attest_gpu", "attest_server", "gpu_required"]

_log = logging.getLogger("blindai.client")
_DCAP_KINDS = (EvidenceKind.SGX, EvidenceKind.TDX)


@dataclass(frozen=True)
class Attested:
    """The outcome of attestation: the certificate to pin, the verified claims, what the server
    says of itself (``/info``: unverified, for display) and, when the policy required the GPU
    (an ``[nvidia_gpu]`` section), the GPU's verified claims.

    ``verified_on`` is the port the evidence was read from: ``"attested"`` (``GET /attestation``
    on the TLS connection presenting ``cert_der``) or ``"unattested"`` (the 0.6 flow, for a
    server without that route). ``fresh``: the evidence answered a nonce of this client.
    """

    cert_der: bytes
    claims: VerifiedClaims
    server_info: dict[str, Any]
    gpu_claims: NvidiaGpuClaims | None = None
    verified_on: Literal["attested", "unattested"] = "unattested"
    fresh: bool = False

    @property
    def digest(self) -> bytes:
        """SHA-256 of the verified certificate (what ``blindai attest HOST`` prints)."""
        return hashlib.sha256(self.cert_der).digest()


def _get(
    plain: PlainTransport | PinnedTlsTransport, path: str, *, optional: bool = False
) -> HttpResponse | None:
    # NetworkError, WrongPort: raised by the transport; nothing read here is verified yet
    resp = plain.request("GET", path, max_body=MAX_UNVERIFIED_BODY)
    if resp.status == 404 and optional:
        return None
    if not 200 <= resp.status < 300:
        where = "attested" if isinstance(plain, PinnedTlsTransport) else "unattested"
        raise ServerError(
            f"GET {path} on the {where} port answered {resp.status}", status_code=resp.status
        )
    return resp


def _cbor(resp: HttpResponse, what: str) -> Any:
    try:
        return loads_cbor(resp.body)  # from a server not verified yet
    except Exception as exc:
        raise ProtocolError(f"{what} is not valid CBOR") from exc


def _bytes(resp: HttpResponse, what: str) -> bytes:
    value = _cbor(resp, what)
    if not isinstance(value, bytes):
        raise ProtocolError(f"{what} must be a CBOR byte string")
    return value


def _kind(info: dict[str, Any], evidence: bytes) -> EvidenceKind:
    if evidence.startswith(simulation.MAGIC):
        return EvidenceKind.SIMULATION
    tee = info.get("tee")
    try:
        kind = EvidenceKind(tee)
    except ValueError:
        pass
    else:
        return server_kind(kind)  # a GPU's report never stands for the server's TEE
    if len(evidence) >= 8 and evidence[4:8] == b"\x81\x00\x00\x00":
        return EvidenceKind.TDX
    if len(evidence) >= 8 and int.from_bytes(evidence[4:8], "little") == 0:
        return EvidenceKind.SGX
    raise EvidenceError("cannot tell which kind of evidence the server sent")


def _kind_text(info: dict[str, Any], evidence: bytes) -> str:
    try:
        return _kind(info, evidence).value
    except EvidenceError:
        return "unrecognised"


def _endorsements(
    plain: PlainTransport,
    kind: EvidenceKind,
    evidence: bytes,
    collateral_fetcher: CollateralSource | None = None,
    snp_certificate_source: SnpCertificateSource | None = None,
) -> Endorsements:
    """The server's endorsements, completed from the caller's sources when it has none.

    SGX/TDX collateral: ``/endorsements``, then BlindAI 0.6's ``/collateral``, then
    ``collateral_fetcher``. SEV-SNP certificates: ``/endorsements``, then
    ``snp_certificate_source`` (e.g. AMD's KDS). The sources are the only network use outside
    the server, and only when the caller passed one.
    """
    resp = _get(plain, "/endorsements", optional=True)
    found = Endorsements()
    if resp is not None:
        body = _cbor(resp, "endorsements")
        certs = body.get("certificates", []) if isinstance(body, dict) else None
        coll = body.get("collateral") if isinstance(body, dict) else None
        if (
            not isinstance(certs, list)
            or not all(isinstance(c, bytes) for c in certs)
            or not isinstance(coll, bytes | None)
        ):
            raise ProtocolError(
                "endorsements must be a CBOR map {collateral: bytes or null, certificates: [bytes]}"
            )
        found = Endorsements(coll, tuple(certs))
    if found.collateral is None and kind in _DCAP_KINDS:
        coll_resp = _get(plain, "/collateral", optional=True)
        if coll_resp is not None:
            from blindai.attestation.dcap import collateral_from_blindai_v06

            found = Endorsements(
                collateral_from_blindai_v06(_cbor(coll_resp, "collateral")),
                found.certificates,
            )
    if found.collateral is None and kind in _DCAP_KINDS and collateral_fetcher is not None:
        _log.info("the server sent no %s collateral: fetching it with the given source", kind.value)
        found = Endorsements(collateral_fetcher.for_quote(evidence).to_json(), found.certificates)
    if (
        not found.certificates
        and kind is EvidenceKind.SEV_SNP
        and snp_certificate_source is not None
    ):
        _log.info("the server sent no SEV-SNP certificates: fetching them with the given source")
        found = Endorsements(found.collateral, snp_certificate_source.for_report(evidence))
    return found


def attest_server(
    plain: PlainTransport,
    *,
    simulation_mode: bool,
    policy: Policy | None,
    now: datetime | None = None,
    verifier: Verifier | None = None,
    collateral_fetcher: CollateralSource | None = None,
    snp_certificate_source: SnpCertificateSource | None = None,
    simulation_option: str = "simulation_mode=True",
) -> Attested:
    """Fetch, verify and bind; raise a typed error on any refusal.

    ``collateral_fetcher`` supplies SGX/TDX collateral, ``snp_certificate_source`` the SEV-SNP
    VCEK and its chain, when the server sends none. ``simulation_option`` is how refusals of a
    simulation server name the opt-in of the caller's API (``--simulation`` in the CLI).
    """
    cert_resp = _get(plain, "/")
    assert cert_resp is not None
    mock = "mock" in cert_resp.headers.get("server", "").lower()
    if mock and not simulation_mode:
        raise VerificationError(
            "the server runs in SIMULATION mode (no TEE; its Server header says mock): refusing. "
            f"Pass {simulation_option} only for development."
        )
    cert_der = _bytes(cert_resp, "certificate")
    info_resp = _get(plain, "/info", optional=True)
    info = _cbor(info_resp, "info") if info_resp is not None else {}
    info = info if isinstance(info, dict) else {}
    quote = _get(plain, "/quote")
    assert quote is not None
    evidence = _bytes(quote, "evidence")
    when = now or datetime.now(timezone.utc)
    if simulation_mode and not evidence.startswith(simulation.MAGIC):
        raise VerificationError(
            f"{simulation_option} accepts only a simulation server; this one sent "
            f"{_kind_text(info, evidence)} evidence: refusing. Verify it against a policy, "
            f"without {simulation_option}."
        )
    kind = _kind(info, evidence)
    if simulation_mode:
        claims: VerifiedClaims = simulation.UnsafeSimulationVerifier().verify(evidence, now=when)
    else:
        claims = _verify_real(
            plain,
            kind,
            evidence,
            policy,
            when,
            verifier,
            collateral_fetcher=collateral_fetcher,
            snp_certificate_source=snp_certificate_source,
            simulation_option=simulation_option,
        )
    check_binding(
        cert_der, report_data=claims.report_data, public_key=getattr(claims, "public_key", None)
    )
    return Attested(cert_der, claims, info)


def _verify_real(
    plain: PlainTransport,
    kind: EvidenceKind,
    evidence: bytes,
    policy: Policy | None,
    when: datetime,
    verifier: Verifier | None,
    *,
    collateral_fetcher: CollateralSource | None,
    snp_certificate_source: SnpCertificateSource | None = None,
    simulation_option: str,
) -> VerifiedClaims:
    if kind is EvidenceKind.SIMULATION:
        raise VerificationError(
            "the server sent SIMULATED evidence (no TEE): refusing outside simulation mode "
            f"(pass {simulation_option} only for development)"
        )
    if policy is None:
        raise ConfigurationError(
            "outside simulation mode a policy is required: pass hazmat_manifest_path= a TOML "
            "policy file naming the expected measurement"
        )
    from blindai.attestation import verifier_for

    if verifier is None:
        verifier = verifier_for(kind)
    elif verifier.kind is not kind:
        raise VerificationError(
            f"the server sent {kind.value} evidence; the given verifier takes {verifier.kind.value}"
        )
    endorsements = _endorsements(plain, kind, evidence, collateral_fetcher, snp_certificate_source)
    return verifier.verify(evidence, policy.for_kind(kind), now=when, endorsements=endorsements)


def gpu_required(policy: Policy | None) -> bool:
    """Whether ``policy`` requires an attested NVIDIA GPU (it has an ``[nvidia_gpu]`` section)."""
    return policy is not None and policy.nvidia_gpu is not None


def attest_gpu(
    attested: PinnedTlsTransport,
    *,
    policy: Policy,
    now: datetime | None = None,
    verifier: NvidiaGpuVerifier | None = None,
) -> NvidiaGpuClaims:
    """Fetch ``/gpu-evidence`` over the attested channel and verify it for its certificate.

    The report must answer ``gpu_nonce(certificate)``; raises a typed error otherwise, or
    :class:`VerificationError` when the server serves no GPU evidence.
    """
    from blindai.attestation.nvidia_gpu import NvidiaGpuVerifier

    resp = _get(attested, "/gpu-evidence", optional=True)
    if resp is None:
        raise VerificationError(
            "the policy requires an attested NVIDIA GPU ([nvidia_gpu]); the server serves no "
            "GPU evidence"
        )
    body = _cbor(resp, "GPU evidence")
    report = body.get("report") if isinstance(body, dict) else None
    certs = body.get("certificates") if isinstance(body, dict) else None
    if not isinstance(report, bytes) or not isinstance(certs, list):
        raise ProtocolError("GPU evidence must be a map {report: bytes, certificates: [bytes]}")
    if not all(isinstance(c, bytes) for c in certs):
        raise ProtocolError("GPU evidence certificates must be byte strings")
    verifier = verifier or NvidiaGpuVerifier.with_embedded_roots()
    return verifier.verify(
        report,
        policy.for_kind(EvidenceKind.NVIDIA_GPU),  # type: ignore[arg-type]
        now=now or datetime.now(timezone.utc),
        endorsements=Endorsements(certificates=tuple(certs)),
        expected_nonce=gpu_nonce(attested.cert_der),
    )


def attest(
    addr: str,
    unattested_server_port: int = PortRole.UNATTESTED.usual_port,
    *,
    policy: Policy | None = None,
    simulation_mode: bool = False,
    now: datetime | None = None,
    verifier: Verifier | None = None,
    collateral_fetcher: CollateralSource | None = None,
    snp_certificate_source: SnpCertificateSource | None = None,
    gpu_verifier: NvidiaGpuVerifier | None = None,
    attested_server_port: int = PortRole.ATTESTED.usual_port,
    nonce: bool = False,
    timeout: float = 60.0,
    max_response_bytes: int = DEFAULT_MAX_BODY,
    simulation_option: str = "simulation_mode=True",
) -> Attested:
    """Verify a running server by remote attestation, without sending it anything else.

    Opens one TLS connection to ``attested_server_port`` and verifies it as
    :func:`~blindai.client.connect` verifies each of its connections: its first request is
    ``GET /attestation`` (``?nonce=`` with ``nonce=True``, so that replayed evidence is
    refused), whose evidence must satisfy ``policy`` at ``now`` (default: the current time) and
    bind the certificate of that very connection; behind a load balancer, the replica verified
    is the one holding the returned certificate. A server without that route is verified on
    ``unattested_server_port`` as in BlindAI 0.6, and the attested port must then present the
    certificate found there (``nonce=True`` refuses such a server: it cannot answer a nonce).
    When ``policy`` requires the GPU (an ``[nvidia_gpu]`` section), ``GET /gpu-evidence`` on
    the same connection must verify too (``gpu_claims``). Nothing else is sent, and the
    connection is closed. Returns the certificate to pin and the verified claims, or raises a
    :class:`~blindai.errors.BlindAIError`. The other arguments mean what they mean for
    :func:`~blindai.client.connect`. ``blindai attest HOST`` is this function.

    Example::

        from blindai.attestation import Policy
        from blindai.client import attest

        attested = attest("tee.example", policy=Policy.from_file("policy.toml"), nonce=True)
        print(attested.claims.measurement.hex(), attested.digest.hex())
    """
    host = addr.split("://", 1)[-1].rstrip("/")
    options = VerifyOptions(
        simulation_mode=simulation_mode,
        policy=policy,
        verifier=verifier,
        collateral_fetcher=collateral_fetcher,
        snp_certificate_source=snp_certificate_source,
        gpu_verifier=gpu_verifier,
        simulation_option=simulation_option,
        now=None if now is None else lambda: now,
    )
    legacy_used: list[Attested] = []

    def legacy() -> Attested:
        plain = PlainTransport(
            host, unattested_server_port, timeout, max_response_bytes=max_response_bytes
        )
        try:
            found = attest_server(
                plain,
                simulation_mode=simulation_mode,
                policy=policy,
                now=now,
                verifier=verifier,
                collateral_fetcher=collateral_fetcher,
                snp_certificate_source=snp_certificate_source,
                simulation_option=simulation_option,
            )
        finally:
            plain.close()
        legacy_used.append(found)
        return found

    channel = AttestedTlsTransport(
        host,
        attested_server_port,
        timeout,
        gate=PeerGate(options, nonce=nonce, legacy=legacy),
        max_response_bytes=max_response_bytes,
    )
    try:
        peer = channel.open()
    finally:
        channel.close()
    return Attested(
        peer.cert_der,
        peer.claims,
        peer.server_info,
        peer.gpu_claims,
        verified_on="unattested" if legacy_used else "attested",
        fresh=peer.fresh,
    )
