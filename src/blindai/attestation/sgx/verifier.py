"""SGX DCAP quote verification: strict parse, authenticity through dcap-qvl, then policy."""

from __future__ import annotations

from typing import Any

from blindai.attestation.claims import EvidenceKind
from blindai.attestation.dcap import DcapResult, QuoteEnvelope, QuoteVerifier
from blindai.attestation.sgx._claims import SgxClaims
from blindai.attestation.sgx._layout import SgxReportBody, parse_sgx_quote
from blindai.attestation.sgx.policy import DEBUG, SgxPolicy

__all__ = ["SgxVerifier"]


class SgxVerifier(QuoteVerifier[SgxReportBody, SgxClaims]):
    """Verifies Intel SGX DCAP quotes (v3; PCK chain in the quote) offline; see
    :class:`~blindai.attestation.dcap.QuoteVerifier` for the flow, the roots and what is not
    checked. :meth:`verify` takes an :class:`SgxPolicy`; a TDX quote is an EvidenceError.
    """

    kind = EvidenceKind.SGX
    policy_type = SgxPolicy

    def _parse(self, evidence: bytes) -> tuple[QuoteEnvelope, SgxReportBody]:
        return parse_sgx_quote(evidence)

    def _claims(self, body: SgxReportBody, result: DcapResult, common: dict[str, Any]) -> SgxClaims:
        return SgxClaims(
            measurement=body.mr_enclave,
            report_data=body.report_data,
            debug=bool(body.attributes & DEBUG),
            mr_enclave=body.mr_enclave,
            mr_signer=body.mr_signer,
            isv_prod_id=body.isv_prod_id,
            isv_svn=body.isv_svn,
            attributes=body.attributes,
            xfrm=body.xfrm,
            misc_select=body.misc_select,
            cpu_svn=body.cpu_svn,
            fmspc=result.fmspc,
            **common,
        )
