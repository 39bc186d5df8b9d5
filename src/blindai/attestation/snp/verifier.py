"""SEV-SNP verification: authenticity (report signature, AMD chain, TCB binding), then policy.

Steps, each with its own error:

1. parse the 1184-byte report strictly (:class:`~blindai.errors.EvidenceError`);
2. load the certificates that came with it: DER, PEM or an SNP certificate table
   (:class:`~blindai.errors.ChainError` when unreadable or absent);
3. find the VCEK or VLEK, as the report's SIGNING_KEY says, whose key verifies the ECDSA
   P-384/SHA-384 signature over bytes 0x000..0x29F (:class:`~blindai.errors.SignatureError`);
4. check it up to a pinned ARK: VCEK -> ASK -> ARK or VLEK -> ASVK -> ARK, RSASSA-PSS, all
   valid at ``now`` (:class:`~blindai.errors.ChainError`);
5. check that the certificate certifies this report: its TCB extensions equal REPORTED_TCB and,
   for a VCEK, its hwID equals CHIP_ID unless the host masked CHIP_ID to zero
   (:class:`~blindai.errors.ChainError`);
6. check the policy (:class:`~blindai.errors.PolicyError`, every violation at once).

Not checked: AMD revocation lists (never fetched), the channel binding (see
:mod:`blindai.attestation.binding`), and the guest's own reading of ``report_data``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from blindai.attestation import _anchors
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.snp._certs import amd_tcb, hardware_id, load_certificates
from blindai.attestation.snp._chain import AmdChain, leaf_candidates, verify_chain
from blindai.attestation.snp._layout import SnpReport, parse_report
from blindai.attestation.snp.claims import SnpClaims
from blindai.attestation.snp.policy import SnpPolicy
from blindai.errors import ChainError, ConfigurationError, PolicyError, SignatureError

__all__ = ["SnpVerifier"]


class SnpVerifier:
    """Verifies SEV-SNP attestation reports against AMD roots pinned by SHA-256 fingerprint.

    Use :meth:`with_embedded_roots` for the real AMD roots (ARK-Milan, ARK-Genoa); the
    constructor takes other fingerprints, e.g. of a test root.
    """

    kind = EvidenceKind.SEV_SNP

    def __init__(self, *, trusted_ark_fingerprints: Iterable[bytes]) -> None:
        pins = frozenset(bytes(p) for p in trusted_ark_fingerprints)
        if not pins or any(len(p) != 32 for p in pins):
            raise ConfigurationError("trusted ARK fingerprints: give at least one SHA-256 digest")
        self._pins = pins

    @classmethod
    def with_embedded_roots(cls) -> SnpVerifier:
        """A verifier trusting AMD's ARK-Milan and ARK-Genoa only."""
        return cls(trusted_ark_fingerprints=(_anchors.AMD_ARK_MILAN, _anchors.AMD_ARK_GENOA))

    def verify(
        self,
        evidence: bytes,
        policy: SnpPolicy,
        *,
        now: datetime,
        endorsements: Endorsements | None = None,
    ) -> SnpClaims:
        """Verify ``evidence`` (a raw report) with the certificates in ``endorsements``."""
        if not isinstance(policy, SnpPolicy):
            raise ConfigurationError("an SEV-SNP report needs an SnpPolicy")
        claims = self.verify_authenticity(evidence, now=now, endorsements=endorsements)
        violations = policy.check(claims)
        if violations:
            raise PolicyError(violations)
        return claims

    def verify_authenticity(
        self, evidence: bytes, *, now: datetime, endorsements: Endorsements | None = None
    ) -> SnpClaims:
        """Steps 1 to 5 only: the claims of an authentic report, before any policy."""
        if now.tzinfo is None:
            raise ConfigurationError("now must be timezone-aware")
        report = parse_report(evidence)
        certs = load_certificates(endorsements.certificates if endorsements else ())
        if not certs:
            raise ChainError("no certificates came with the SEV-SNP report (VCEK/VLEK, ASK, ARK)")
        leaf = _find_signer(report, certs)
        chain = verify_chain(certs, leaf, signing_key=report.signing_key, pins=self._pins, now=now)
        _check_certifies(report, chain)
        return SnpClaims._from_report(
            report, kind=EvidenceKind.SEV_SNP, verified_at=now, product=chain.product
        )


def _report_signature_ok(report: SnpReport, cert: x509.Certificate) -> bool:
    key = cast(ec.EllipticCurvePublicKey, cert.public_key())  # leaf_candidates: P-384 only
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        key.verify(signature, report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return False
    return True


def _find_signer(report: SnpReport, certs: Sequence[x509.Certificate]) -> x509.Certificate:
    for cert in leaf_candidates(certs, report.signing_key):
        if _report_signature_ok(report, cert):
            return cert
    raise SignatureError(
        f"the report signature does not verify with any {report.signing_key.upper()} given"
    )


def _check_certifies(report: SnpReport, chain: AmdChain) -> None:
    certified = amd_tcb(chain.leaf)
    if certified != report.reported_tcb:
        raise ChainError(
            f"the {report.signing_key.upper()} certifies TCB {certified}, "
            f"the report says REPORTED_TCB {report.reported_tcb}"
        )
    if report.signing_key != "vcek" or (report.mask_chip_id and not any(report.chip_id)):
        return  # a VLEK has no hwID; a masked CHIP_ID is zero (the VCEK key is per chip)
    if hardware_id(chain.leaf) != report.chip_id:
        raise ChainError("the VCEK's hwID is not the report's CHIP_ID: another machine's VCEK")
