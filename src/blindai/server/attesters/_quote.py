"""What an attester reads in the evidence it collected: the report data.

Parsing is the verifier's (:mod:`blindai.attestation`'s strict ``_layout`` modules): an
attester checks that collected evidence carries our report data. Which collateral a quote
needs (FMSPC, PCK CA) is :mod:`blindai.attestation._collateral`'s. Nothing here is verified.
"""

from __future__ import annotations

from blindai.attestation.claims import EvidenceKind
from blindai.attestation.sgx._layout import parse_sgx_quote
from blindai.attestation.snp._layout import parse_report
from blindai.attestation.tdx._layout import parse_tdx_quote

__all__ = ["carried_report_data", "check_report_data"]


def check_report_data(report_data: bytes) -> None:
    """Raise ValueError unless ``report_data`` is 64 bytes, as the TEEs and the binding expect."""
    if len(report_data) != 64:
        raise ValueError(f"report data must be 64 bytes, got {len(report_data)}")


def carried_report_data(kind: EvidenceKind, evidence: bytes) -> bytes:
    """The report data in an SGX quote, a TDX quote or an SEV-SNP report.

    EvidenceError when the evidence is malformed, unsupported or of another kind.
    """
    if kind is EvidenceKind.SGX:
        return parse_sgx_quote(evidence)[1].report_data
    if kind is EvidenceKind.TDX:
        return parse_tdx_quote(evidence)[1].report_data
    if kind is EvidenceKind.SEV_SNP:
        return parse_report(evidence).report_data
    raise ValueError(f"no report data to read in {kind.value} evidence")
