"""Verify NVIDIA GPU attestation reports: authenticity, then the nonce, then policy.

Steps of :meth:`NvidiaGpuVerifier.verify`, each with its own error:

1. parse the SPDM request and response strictly (:class:`~blindai.errors.EvidenceError`);
2. load the certificate chain that came with it, leaf first (:class:`~blindai.errors.ChainError`);
3. check the ECDSA P-384/SHA-384 signature (raw r||s) of the leaf key over the request and
   the response up to its signature (:class:`~blindai.errors.SignatureError`);
4. check the chain up to a pinned NVIDIA Device Identity CA, valid at ``now``, and that the
   leaf's FWID (TCG DICE extension) equals the report's ``fwid`` (:class:`ChainError`);
5. when ``expected_nonce`` is given, check that the requester nonce equals it
   (:class:`~blindai.errors.BindingError`);
6. verify the policy's RIM files (signature and chain to a pinned NVIDIA RIM root, at
   ``now``), then check the policy and the RIMs (:class:`~blindai.errors.PolicyError`, every
   violation at once).

Not checked: revocation of the GPU or RIM certificates (NVIDIA's OCSP is never asked), and,
without ``expected_nonce``, freshness: the caller must then compare ``claims.nonce`` itself.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from blindai.attestation import _anchors
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.nvidia_gpu._chain import GpuChain, load_chain, p384_key, verify_chain
from blindai.attestation.nvidia_gpu._claims import NvidiaGpuClaims
from blindai.attestation.nvidia_gpu._layout import NONCE_SIZE, SpdmReport, parse_report
from blindai.attestation.nvidia_gpu._rim import verify_manifest
from blindai.attestation.nvidia_gpu.policy import NvidiaGpuPolicy, check_reference
from blindai.errors import (
    BindingError,
    ChainError,
    ConfigurationError,
    PolicyError,
    SignatureError,
)

__all__ = ["NvidiaGpuVerifier"]

_COORDINATE = 48


def _pins(values: Iterable[bytes], what: str) -> frozenset[bytes]:
    pins = frozenset(values)
    if not pins or any(not isinstance(p, bytes) or len(p) != 32 for p in pins):
        raise ConfigurationError(f"{what}: give SHA-256 digests (32 bytes)")
    return pins


class NvidiaGpuVerifier:
    """Verifies GPU reports against NVIDIA roots pinned by SHA-256 fingerprint.

    Use :meth:`with_embedded_roots` for NVIDIA's Device Identity CA and CoRIM signing root;
    tests pin generated roots with ``NvidiaGpuVerifier(trusted_root_fingerprints=[...],
    rim_root_fingerprints=[...])``.
    """

    kind = EvidenceKind.NVIDIA_GPU

    def __init__(
        self,
        *,
        trusted_root_fingerprints: Iterable[bytes],
        rim_root_fingerprints: Iterable[bytes] = (_anchors.NVIDIA_RIM_ROOT,),
    ) -> None:
        self._roots = _pins(trusted_root_fingerprints, "trusted_root_fingerprints")
        self._rim_roots = _pins(rim_root_fingerprints, "rim_root_fingerprints")

    @classmethod
    def with_embedded_roots(cls) -> NvidiaGpuVerifier:
        """A verifier trusting only NVIDIA's pinned device and RIM roots."""
        return cls(
            trusted_root_fingerprints=(_anchors.NVIDIA_DEVICE_IDENTITY_CA,),
            rim_root_fingerprints=(_anchors.NVIDIA_RIM_ROOT,),
        )

    def verify(
        self,
        evidence: bytes,
        policy: NvidiaGpuPolicy,
        *,
        now: datetime,
        endorsements: Endorsements | None = None,
        expected_nonce: bytes | None = None,
    ) -> NvidiaGpuClaims:
        """Steps 1 to 6; ``endorsements.certificates`` carry the GPU's chain (PEM or DER)."""
        if not isinstance(policy, NvidiaGpuPolicy):
            raise ConfigurationError("an NVIDIA GPU report needs an NvidiaGpuPolicy")
        claims = self.verify_authenticity(
            evidence, now=now, endorsements=endorsements, expected_nonce=expected_nonce
        )
        manifests = [
            (name, verify_manifest(data, trusted_roots=self._rim_roots, now=claims.verified_at))
            for name, data in policy.reference_manifests
        ]
        violations = policy.check(claims) + check_reference(claims, manifests)
        if violations:
            raise PolicyError(violations)
        return claims

    def verify_authenticity(
        self,
        evidence: bytes,
        *,
        now: datetime,
        endorsements: Endorsements | None = None,
        expected_nonce: bytes | None = None,
    ) -> NvidiaGpuClaims:
        """Steps 1 to 5 only: the claims of an authentic report, before any policy."""
        now = _aware(now)
        report = parse_report(evidence)
        certs = load_chain(endorsements.certificates if endorsements else ())
        _check_signature(report, p384_key(certs[0], 0))
        chain = verify_chain(certs, trusted_roots=self._roots, now=now)
        _check_fwid(report, chain)
        if expected_nonce is not None:
            _check_nonce(report.requester_nonce, expected_nonce)
        return _claims(report, chain, now)


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ConfigurationError("now must be a timezone-aware datetime")
    return now.astimezone(timezone.utc)


def _check_signature(report: SpdmReport, key: ec.EllipticCurvePublicKey) -> None:
    raw = report.signature
    r = int.from_bytes(raw[:_COORDINATE], "big")
    s = int.from_bytes(raw[_COORDINATE:], "big")
    try:
        key.verify(encode_dss_signature(r, s), report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise SignatureError(
            "the GPU report's signature does not verify with its leaf certificate"
        ) from exc


def _check_fwid(report: SpdmReport, chain: GpuChain) -> None:
    reported, certified = report.opaque.fwid, chain.fwid
    if reported is None and certified is None:
        return
    if reported is None or certified is None or not hmac.compare_digest(reported, certified):
        shown = certified.hex() if certified is not None else "none"
        raise ChainError(
            f"the GPU leaf certifies FWID {shown}, the report says "
            f"{reported.hex() if reported is not None else 'none'}"
        )


def _check_nonce(actual: bytes, expected: bytes) -> None:
    """Raise :class:`BindingError` unless the report's requester nonce is ``expected``."""
    if len(expected) != NONCE_SIZE:
        raise ConfigurationError(f"the expected GPU nonce must be {NONCE_SIZE} bytes")
    if not hmac.compare_digest(actual, expected):
        raise BindingError(
            f"the GPU report answers nonce {actual.hex()}, expected {expected.hex()}"
        )


def _claims(report: SpdmReport, chain: GpuChain, now: datetime) -> NvidiaGpuClaims:
    opaque = report.opaque
    return NvidiaGpuClaims(
        kind=EvidenceKind.NVIDIA_GPU,
        measurement=hashlib.sha384(report.record).digest(),
        report_data=report.requester_nonce,
        debug=False,
        verified_at=now,
        measurements=dict(report.measurements),
        driver_version=opaque.driver_version,
        vbios_version=opaque.vbios_version,
        nonce=report.requester_nonce,
        responder_nonce=report.responder_nonce,
        fwid=opaque.fwid,
        nvdec0_status=opaque.nvdec0_status,
        measurement_count=dict(opaque.measurement_count),
        opaque=dict(opaque.raw),
        model=chain.model,
        device_id=chain.device_id,
        chain=chain.subjects,
        certificate=chain.leaf_der,
    )
