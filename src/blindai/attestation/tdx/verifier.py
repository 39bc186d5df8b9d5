"""TDX DCAP quote verification: strict parse, authenticity through dcap-qvl, then policy."""

from __future__ import annotations

from typing import Any

from blindai.attestation.claims import EvidenceKind
from blindai.attestation.dcap import DcapResult, QuoteEnvelope, QuoteVerifier
from blindai.attestation.tdx._claims import TdxClaims
from blindai.attestation.tdx._layout import TdReport, parse_tdx_quote
from blindai.attestation.tdx.policy import DEBUG, TdxPolicy

__all__ = ["TdxVerifier"]


class TdxVerifier(QuoteVerifier[TdReport, TdxClaims]):
    """Verifies Intel TDX DCAP quotes (v4, v5; PCK chain in the quote) offline; see
    :class:`~blindai.attestation.dcap.QuoteVerifier` for the flow, the roots and what is not
    checked. :meth:`verify` takes a :class:`TdxPolicy`; an SGX quote is an EvidenceError.
    """

    kind = EvidenceKind.TDX
    policy_type = TdxPolicy

    def _parse(self, evidence: bytes) -> tuple[QuoteEnvelope, TdReport]:
        return parse_tdx_quote(evidence)

    def _claims(self, report: TdReport, result: DcapResult, common: dict[str, Any]) -> TdxClaims:
        return TdxClaims(
            measurement=report.mr_td,
            report_data=report.report_data,
            debug=bool(report.td_attributes & DEBUG),
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
            **common,
        )
