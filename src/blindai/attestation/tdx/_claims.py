"""Verified TDX claims (built only by :class:`~blindai.attestation.tdx.TdxVerifier`)."""

from __future__ import annotations

from dataclasses import dataclass

from blindai.attestation.claims import VerifiedClaims

__all__ = ["TdxClaims"]


@dataclass(frozen=True, kw_only=True)
class TdxClaims(VerifiedClaims):
    """What a verified TDX quote says about the TD, its TDX module and platform.

    ``measurement`` is MRTD (also ``mr_td``). ``td_attributes`` and ``xfam`` are little-endian
    64-bit integers (DEBUG is TD attributes bit 0). ``tee_tcb_svn2`` and ``mr_service_td``
    are set for TD report 1.5 bodies (quote v5) only.
    """

    mr_td: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    td_attributes: int
    xfam: int
    tee_tcb_svn: bytes
    tee_tcb_svn2: bytes | None
    mr_service_td: bytes | None
    quote_version: int
    tcb_evaluation_data_number: int | None = None
    """The collateral's ``tcbEvaluationDataNumber`` (the lower of its TCB Info's and QE
    Identity's): the TCB recovery event its verdict dates from."""
