"""Verified SGX claims (built only by :class:`~blindai.attestation.sgx.SgxVerifier`)."""

from __future__ import annotations

from dataclasses import dataclass

from blindai.attestation.claims import VerifiedClaims

__all__ = ["SgxClaims"]


@dataclass(frozen=True, kw_only=True)
class SgxClaims(VerifiedClaims):
    """What a verified SGX quote says about the enclave and its platform.

    ``measurement`` is MRENCLAVE (also ``mr_enclave``). ``attributes`` is ATTRIBUTES.FLAGS and
    ``xfrm`` ATTRIBUTES.XFRM, each read as a little-endian 64-bit integer as in BlindAI 0.6;
    ``misc_select`` is MISCSELECT (32-bit). ``tcb_status`` and ``advisory_ids`` are dcap-qvl's
    merged platform and QE verdict; ``fmspc`` comes from the PCK certificate.
    """

    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    attributes: int
    xfrm: int
    misc_select: int
    cpu_svn: bytes
    fmspc: bytes
    quote_version: int
    tcb_evaluation_data_number: int | None = None
    """The collateral's ``tcbEvaluationDataNumber`` (the lower of its TCB Info's and QE
    Identity's): the TCB recovery event its verdict dates from."""
