"""connect(): verify a server by remote attestation, then open a :class:`Connection` to it."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from blindai.attestation import Verifier
from blindai.attestation.policy import Policy
from blindai.client._access import check_api_key
from blindai.client._attest import Attested, attest_server
from blindai.client._http11 import DEFAULT_MAX_BODY
from blindai.client._peers import AttestationCache, PeerGate, VerifyOptions
from blindai.client._ports import PortRole
from blindai.client._transport import AttestedTlsTransport, PlainTransport
from blindai.client.connection import Connection

if TYPE_CHECKING:
    from blindai.attestation._collateral import CollateralSource
    from blindai.attestation._kds import SnpCertificateSource
    from blindai.attestation.nvidia_gpu import NvidiaGpuVerifier

__all__ = ["connect"]


def connect(
    addr: str,
    unattested_server_port: int = PortRole.UNATTESTED.usual_port,
    attested_server_port: int = PortRole.ATTESTED.usual_port,
    model_management_port: int = PortRole.MANAGEMENT.usual_port,
    hazmat_manifest_path: str | os.PathLike[str] | None = None,
    hazmat_http_on_unattested_port: bool = False,
    simulation_mode: bool = False,
    *,
    policy: Policy | None = None,
    verifier: Verifier | None = None,
    collateral_fetcher: CollateralSource | None = None,
    snp_certificate_source: SnpCertificateSource | None = None,
    gpu_verifier: NvidiaGpuVerifier | None = None,
    nonce: bool = False,
    attestation_cache: AttestationCache | None = None,
    keep_alive: bool = True,
    timeout: float = 300.0,
    max_response_bytes: int = DEFAULT_MAX_BODY,
    simulation_option: str = "simulation_mode=True",
    api_key: str | None = None,
) -> Connection:
    """Verify the server by remote attestation, then open the attested connection.

    Each TCP connection to the attested ports, the first and every later one (reconnects,
    retries, one per request with ``keep_alive=False``), is verified before anything is sent
    on it: its first request is ``GET /attestation``, whose evidence must satisfy the policy
    and bind the certificate of that very TLS connection. Verified replicas are cached by
    certificate hash (``attestation_cache``, default: one per connection, 5 minutes), so a
    replica behind a load balancer is verified once and an unseen one always; a connection that
    fails is closed before any request and the error is raised (counted in
    ``Connection.attestation_stats``). ``nonce=True`` asks each replica for evidence over a
    fresh random nonce (report data: SHA-256(certificate) then SHA-256(nonce)), so replayed
    evidence is refused. A server without ``/attestation`` is verified on its unattested port
    as in BlindAI 0.6, and then only its certificate is accepted.

    Outside simulation mode a policy (``hazmat_manifest_path``: a TOML policy file, or
    ``policy``) names what the evidence must show. ``simulation_mode=True`` accepts a
    simulation server and warns
    (:class:`~blindai.attestation.simulation.SimulationModeWarning`): it protects nothing;
    ``verifier=UnsafeSimulationVerifier(expected_measurement=...)`` then pins the simulated
    measurement. The unattested port carries only public data verified here, over plain HTTP
    (``hazmat_http_on_unattested_port`` is accepted for compatibility).
    ``verifier`` replaces the verifier that trusts the embedded vendor roots (a private
    PKI, or tests); the policy still applies.
    ``collateral_fetcher`` (SGX, TDX) supplies the collateral (TCB Info, QE Identity, CRLs)
    when the server sends none, e.g. a TDX server started without ``--pccs-url``:
    ``collateral_fetcher=PcsCollateralSource.online()`` (Intel's PCS) or
    ``PcsCollateralSource.online("https://pccs.example:8081")``.
    ``snp_certificate_source`` (SEV-SNP) supplies the VCEK, ASK and ARK when the server sends
    no certificates (a host with no certificate table):
    ``snp_certificate_source=KdsCertificateSource.online()`` (AMD's KDS). Nothing is fetched by
    the client unless a source is given; what it fetches is verified like the server's.
    ``timeout`` (seconds) bounds connecting and each answer: a whole response must arrive
    within it plus one second per 64 KiB (:class:`~blindai.errors.RequestTimeout`);
    ``max_response_bytes`` caps one response body (1 GiB by default). ``simulation_option``
    is how a refusal of a simulation server names the opt-in: wrappers with their own option
    (the CLI's ``--simulation``) pass theirs.
    A port that serves another of the three roles raises :class:`~blindai.errors.WrongPort`.
    A policy with an ``[nvidia_gpu]`` section requires each replica's GPU: its report, read
    with ``GET /gpu-evidence`` on the same connection, must verify (``gpu_verifier``, default
    NVIDIA's pinned roots) and answer the nonce derived from the attested certificate, before
    anything else is sent; its claims are ``Connection.gpu_claims``.
    ``api_key`` (a server with access control): sent as ``Authorization: Bearer KEY`` on each
    attested connection once it is verified, never on the unattested port nor with the
    evidence requests that verify a connection.
    """
    del hazmat_http_on_unattested_port
    if api_key is not None:
        check_api_key(api_key)
    if policy is None and hazmat_manifest_path is not None:
        policy = Policy.from_file(hazmat_manifest_path)
    host = addr.split("://", 1)[-1].rstrip("/")
    limit = max_response_bytes
    options = VerifyOptions(
        simulation_mode=simulation_mode,
        policy=policy,
        verifier=verifier,
        collateral_fetcher=collateral_fetcher,
        snp_certificate_source=snp_certificate_source,
        gpu_verifier=gpu_verifier,
        simulation_option=simulation_option,
    )

    def legacy() -> Attested:
        plain = PlainTransport(host, unattested_server_port, timeout, max_response_bytes=limit)
        try:
            return attest_server(
                plain,
                simulation_mode=simulation_mode,
                policy=policy,
                verifier=verifier,
                collateral_fetcher=collateral_fetcher,
                snp_certificate_source=snp_certificate_source,
                simulation_option=simulation_option,
            )
        finally:
            plain.close()

    gate = PeerGate(options, cache=attestation_cache, nonce=nonce, legacy=legacy)

    def transport(port: int, role: PortRole) -> AttestedTlsTransport:
        return AttestedTlsTransport(
            host,
            port,
            timeout,
            gate=gate,
            role=role,
            max_response_bytes=limit,
            keep_alive=keep_alive,
            api_key=api_key,
        )

    attested = transport(attested_server_port, PortRole.ATTESTED)
    start = time.perf_counter()
    try:
        first = attested.open()
    except BaseException:
        attested.close()
        raise
    elapsed = time.perf_counter() - start
    management = transport(model_management_port, PortRole.MANAGEMENT)
    return Connection(attested, management, first, elapsed)
