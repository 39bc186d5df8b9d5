"""TDX DCAP quote verification: strict parse, authenticity through dcap-qvl, then policy."""

from __future__ import annotations

from datetime import datetime

from blindai.attestation._dcap import DcapResult, QuoteVerifier
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.sgx._layout import QuoteEnvelope
from blindai.attestation.tdx._claims import TdxClaims
from blindai.attestation.tdx._layout import TdReport, parse_tdx_quote
from blindai.attestation.tdx.policy import DEBUG, TdxPolicy

__all__ = ["TdxVerifier"]


class TdxVerifier(QuoteVerifier[TdReport, TdxClaims]):
    """Verifies Intel TDX DCAP quotes (v4, v5; PCK chain in the quote) offline.

    ``trusted_roots`` are SHA-256 fingerprints of the root certificates accepted at the end of
    the quote's PCK chain; :meth:`with_embedded_roots` pins the Intel SGX Root CA (which also
    roots TDX). Collateral (``Endorsements.collateral``, QuoteCollateralV3 JSON) is required.
    :meth:`verify` takes a :class:`TdxPolicy`; an SGX quote is an EvidenceError.

    Not checked here: the binding of ``report_data`` to a TLS key or nonce
    (:func:`blindai.attestation.check_binding`), and anything the policy leaves unset.
    dcap-qvl 0.7 refuses debug TDs whatever the policy (a PolicyError on ``debug``).
    """

    kind = EvidenceKind.TDX
    policy_type = TdxPolicy

    def _parse(self, evidence: bytes) -> tuple[QuoteEnvelope, TdReport]:
        return parse_tdx_quote(evidence)

    def _claims(
        self, envelope: QuoteEnvelope, report: TdReport, result: DcapResult, now: datetime
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
