"""SGX DCAP quote verification: strict parse, authenticity through dcap-qvl, then policy."""

from __future__ import annotations

from datetime import datetime

from blindai.attestation._dcap import DcapResult, QuoteVerifier
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.sgx._claims import SgxClaims
from blindai.attestation.sgx._layout import QuoteEnvelope, SgxReportBody, parse_sgx_quote
from blindai.attestation.sgx.policy import DEBUG, SgxPolicy

__all__ = ["SgxVerifier"]


class SgxVerifier(QuoteVerifier[SgxReportBody, SgxClaims]):
    """Verifies Intel SGX DCAP quotes (ECDSA P-256, PCK chain in the quote) offline.

    ``trusted_roots`` are SHA-256 fingerprints of the root certificates accepted at the end of
    the quote's PCK chain; :meth:`with_embedded_roots` pins the Intel SGX Root CA. Collateral
    (``Endorsements.collateral``, dcap-qvl QuoteCollateralV3 JSON) is required.
    :meth:`verify` takes an :class:`SgxPolicy`; a TDX quote is an EvidenceError.

    Not checked here: the binding of ``report_data`` to a TLS key or nonce
    (:func:`blindai.attestation.check_binding`), and anything the policy leaves unset.
    dcap-qvl 0.7 refuses debug enclaves whatever the policy (a PolicyError on ``debug``).
    """

    kind = EvidenceKind.SGX
    policy_type = SgxPolicy

    def _parse(self, evidence: bytes) -> tuple[QuoteEnvelope, SgxReportBody]:
        return parse_sgx_quote(evidence)

    def _claims(
        self, envelope: QuoteEnvelope, body: SgxReportBody, result: DcapResult, now: datetime
    ) -> SgxClaims:
        return SgxClaims(
            kind=EvidenceKind.SGX,
            measurement=body.mr_enclave,
            report_data=body.report_data,
            debug=bool(body.attributes & DEBUG),
            verified_at=now,
            tcb_status=result.tcb_status,
            advisory_ids=result.advisory_ids,
            mr_enclave=body.mr_enclave,
            mr_signer=body.mr_signer,
            isv_prod_id=body.isv_prod_id,
            isv_svn=body.isv_svn,
            attributes=body.attributes,
            xfrm=body.xfrm,
            misc_select=body.misc_select,
            cpu_svn=body.cpu_svn,
            fmspc=result.fmspc,
            quote_version=envelope.header.version,
        )
