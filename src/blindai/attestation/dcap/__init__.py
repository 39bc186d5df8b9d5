"""Intel DCAP quotes, what SGX and TDX share: the quote envelope, collateral, and verification
through dcap-qvl up to a pinned Intel root.

:mod:`blindai.attestation.sgx` and :mod:`blindai.attestation.tdx` each parse their own report
body and build their own claims on :class:`QuoteVerifier`; this package holds the rest once.
:class:`Collateral` is dcap-qvl's ``QuoteCollateralV3`` (TCB Info, QE Identity, CRLs and their
issuer chains) with its conversions from Intel PCS answers and BlindAI 0.6's ``/collateral``
map. :mod:`blindai.attestation.dcap.fields` holds the policy readers both policies use.

Example::

    from blindai.attestation.dcap import parse_collateral, parse_envelope

    envelope = parse_envelope(quote)          # untrusted: header, body, PCK chain
    print(envelope.header.version, parse_collateral(collateral_json).next_update())
"""

from __future__ import annotations

from blindai.attestation.dcap._collateral import (
    Collateral,
    collateral_from_blindai_v06,
    collateral_from_pcs,
    collateral_to_blindai_v06,
    parse_collateral,
    pck_crl_issuer_chain_from_quote,
)
from blindai.attestation.dcap._quote import (
    BODY_SGX,
    BODY_TD10,
    BODY_TD15,
    INTEL_QE_VENDOR_ID,
    TEE_SGX,
    TEE_TDX,
    QuoteEnvelope,
    QuoteHeader,
    parse_envelope,
)
from blindai.attestation.dcap._verify import (
    TCB_STATUSES,
    DcapResult,
    QuoteVerifier,
    check_report_agrees,
    verify_quote,
)

__all__ = [
    "BODY_SGX",
    "BODY_TD10",
    "BODY_TD15",
    "INTEL_QE_VENDOR_ID",
    "TCB_STATUSES",
    "TEE_SGX",
    "TEE_TDX",
    "Collateral",
    "DcapResult",
    "QuoteEnvelope",
    "QuoteHeader",
    "QuoteVerifier",
    "check_report_agrees",
    "collateral_from_blindai_v06",
    "collateral_from_pcs",
    "collateral_to_blindai_v06",
    "parse_collateral",
    "parse_envelope",
    "pck_crl_issuer_chain_from_quote",
    "verify_quote",
]
