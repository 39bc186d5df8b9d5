"""Verify AWS Nitro Enclaves attestation documents: authenticity, then policy.

Steps of :meth:`NitroVerifier.verify`:

1. parse the COSE_Sign1 envelope and its payload, strictly (:class:`EvidenceError`);
2. check the ``cabundle`` chain from a pinned AWS root to the enclave ``certificate``, both at
   the document's ``timestamp`` and at the verification time ``now`` (:class:`ChainError`):
   the document must have been signed while its 3-hour certificate was valid, and that
   certificate must still be valid when the document is relied upon;
3. check the ES384 signature over ``Sig_structure`` with the certificate's key
   (:class:`SignatureError`);
4. build :class:`NitroClaims`, then check the policy, freshness included (:class:`PolicyError`,
   every violation at once).

Not checked here: the channel binding (``user_data`` / ``public_key`` against the TLS
certificate; see :mod:`blindai.attestation.binding`), the ``nonce`` (the caller compares it
with the one it sent), and revocation (AWS publishes none for these certificates).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from blindai.attestation._anchors import AWS_NITRO_ROOT
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.nitro._chain import verify_chain
from blindai.attestation.nitro._claims import NitroClaims
from blindai.attestation.nitro._layout import AttestationDocument, CoseSign1, parse
from blindai.attestation.nitro.policy import NitroPolicy
from blindai.errors import ConfigurationError, PolicyError, SignatureError

__all__ = ["NitroVerifier"]

_COORDINATE = 48  # P-384 r and s, big-endian


class NitroVerifier:
    """Verifies Nitro attestation documents against pinned root fingerprints.

    Use :meth:`with_embedded_roots` for AWS's root; tests may pin their own root with
    ``NitroVerifier(trusted_root_fingerprints=[sha256_of_root_der])``.
    """

    kind = EvidenceKind.NITRO

    def __init__(self, *, trusted_root_fingerprints: Iterable[bytes]) -> None:
        roots = frozenset(trusted_root_fingerprints)
        if not roots or any(not isinstance(r, bytes) or len(r) != 32 for r in roots):
            raise ConfigurationError("trusted_root_fingerprints: give SHA-256 digests (32 bytes)")
        self._roots = roots

    @classmethod
    def with_embedded_roots(cls) -> NitroVerifier:
        """A verifier trusting only the pinned AWS Nitro Enclaves root."""
        return cls(trusted_root_fingerprints=(AWS_NITRO_ROOT,))

    def verify(
        self,
        evidence: bytes,
        policy: NitroPolicy,
        *,
        now: datetime,
        endorsements: Endorsements | None = None,
    ) -> NitroClaims:
        """Verify ``evidence`` at time ``now`` and check ``policy``; return the claims.

        ``endorsements`` are not used: the chain travels in the document's ``cabundle``.
        """
        _check_arguments(policy, now)
        now = now.astimezone(timezone.utc)
        envelope, doc = parse(evidence)
        times = (("the document's timestamp", doc.issued_at), ("the verification time", now))
        key = verify_chain(doc.certificate, doc.cabundle, trusted_roots=self._roots, times=times)
        _check_signature(envelope, key)
        claims = _claims(doc, now)
        violations = policy.check(claims)
        if violations:
            raise PolicyError(violations)
        return claims


def _check_arguments(policy: Any, now: datetime) -> None:
    if not isinstance(policy, NitroPolicy):
        raise ConfigurationError("NitroVerifier.verify needs a NitroPolicy")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ConfigurationError("now must be a timezone-aware datetime")


def _check_signature(envelope: CoseSign1, key: ec.EllipticCurvePublicKey) -> None:
    raw = envelope.signature
    r = int.from_bytes(raw[:_COORDINATE], "big")
    s = int.from_bytes(raw[_COORDINATE:], "big")
    try:
        key.verify(encode_dss_signature(r, s), envelope.to_be_signed(), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise SignatureError("the attestation document's ES384 signature does not verify") from exc


def _claims(doc: AttestationDocument, now: datetime) -> NitroClaims:
    pcr0 = doc.pcrs[0]
    return NitroClaims(
        kind=EvidenceKind.NITRO,
        measurement=pcr0,
        report_data=doc.user_data or b"",
        debug=not any(pcr0),
        verified_at=now,
        pcrs=dict(sorted(doc.pcrs.items())),
        module_id=doc.module_id,
        timestamp=doc.issued_at,
        digest=doc.digest,
        public_key=doc.public_key,
        user_data=doc.user_data,
        nonce=doc.nonce,
        certificate=doc.certificate,
    )
