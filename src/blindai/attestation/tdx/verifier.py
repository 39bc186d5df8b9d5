"""TDX DCAP quote verification: strict parse, authenticity through dcap-qvl, then policy."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from blindai.attestation import _anchors
from blindai.attestation._dcap import DcapResult, check_report_agrees, verify_quote
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.sgx._layout import QuoteEnvelope
from blindai.attestation.tdx._claims import TdxClaims
from blindai.attestation.tdx._layout import TdReport, parse_tdx_quote
from blindai.attestation.tdx.policy import DEBUG, TdxPolicy
from blindai.errors import ConfigurationError, PolicyError

__all__ = ["TdxVerifier"]


class TdxVerifier:
    """Verifies Intel TDX DCAP quotes (v4, v5; PCK chain in the quote) offline.

    ``trusted_roots`` are SHA-256 fingerprints of the root certificates accepted at the end of
    the quote's PCK chain; :meth:`with_embedded_roots` pins the Intel SGX Root CA (which also
    roots TDX). Collateral (``Endorsements.collateral``, QuoteCollateralV3 JSON) is required.

    Not checked here: the binding of ``report_data`` to a TLS key or nonce
    (:func:`blindai.attestation.check_binding`), and anything the policy leaves unset.
    dcap-qvl 0.7 refuses debug TDs whatever the policy (a PolicyError on ``debug``).
    """

    kind = EvidenceKind.TDX

    def __init__(self, *, trusted_roots: Iterable[bytes]) -> None:
        self._roots = frozenset(trusted_roots)
        if not self._roots:
            raise ConfigurationError("a TDX verifier needs at least one pinned root")

    @classmethod
    def with_embedded_roots(cls) -> TdxVerifier:
        """A verifier trusting only the pinned Intel SGX Root CA."""
        return cls(trusted_roots=(_anchors.INTEL_SGX_ROOT_CA,))

    def verify(
        self,
        evidence: bytes,
        policy: Any,
        *,
        now: datetime,
        endorsements: Endorsements | None = None,
    ) -> TdxClaims:
        """Verify a TDX quote and its collateral at ``now`` against ``policy``.

        Raises EvidenceError (malformed, unsupported, or an SGX quote), CollateralUnavailable,
        ChainError / SignatureError / CollateralError (not authentic), PolicyError.
        """
        if not isinstance(policy, TdxPolicy):
            raise ConfigurationError("TdxVerifier needs a TdxPolicy")
        # (1) strict parse: untrusted structure
        envelope, report = parse_tdx_quote(evidence)
        # (2) authenticity: PCK chain to a pinned root, collateral, signatures, TCB status
        result = verify_quote(
            envelope.quote,
            envelope.pck_chain_pem,
            endorsements,
            now=now,
            trusted_roots=self._roots,
        )
        check_report_agrees(result, report.mr_td, report.report_data)
        claims = _claims(envelope, report, result, now)
        # (3) policy, every violation at once
        violations = policy.check(claims)
        if violations:
            raise PolicyError(violations)
        return claims


def _claims(
    envelope: QuoteEnvelope, report: TdReport, result: DcapResult, now: datetime
) -> TdxClaims:
    return TdxClaims(
        kind=EvidenceKind.TDX,
        measurement=report.mr_td,
        report_data=report.report_data,
        debug=bool(report.td_attributes & DEBUG),
        verified_at=now,
        tcb_status=result.tcb_status,
        advisory_ids=result.advisory_ids,
        mr_td=report.mr_td,
        rtmr0=report.rtmrs[0],
        rtmr1=report.rtmrs[1],
        rtmr2=report.rtmrs[2],
        rtmr3=report.rtmrs[3],
        mr_seam=report.mr_seam,
        mr_signer_seam=report.mr_signer_seam,
        mr_config_id=report.mr_config_id,
        mr_owner=report.mr_owner,
        mr_owner_config=report.mr_owner_config,
        td_attributes=report.td_attributes,
        xfam=report.xfam,
        tee_tcb_svn=report.tee_tcb_svn,
        tee_tcb_svn2=report.tee_tcb_svn2,
        mr_service_td=report.mr_service_td,
        quote_version=envelope.header.version,
    )
