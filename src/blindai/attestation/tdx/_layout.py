"""TDX quote layout: the TD report bodies inside a DCAP quote (:mod:`~blindai.attestation.dcap`).

Quote v4 carries a TD report 1.0 (584 bytes); quote v5 a TD report 1.0 (body type 2) or 1.5
(body type 3, 648 bytes: adds TEE_TCB_SVN2 and MRSERVICETD). Nothing here is verified.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from blindai.attestation.dcap import BODY_TD15, TEE_TDX, QuoteEnvelope, parse_envelope
from blindai.errors import EvidenceError

__all__ = ["TdReport", "parse_td_report", "parse_tdx_quote"]

_MR = 48


@dataclass(frozen=True)
class TdReport:
    """A TD report body, 1.0 or 1.5 (untrusted). Attributes are little-endian integers."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: int
    xfam: int
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None
    mr_service_td: bytes | None


def _mrs(body: bytes, start: int, count: int) -> list[bytes]:
    return [body[start + i * _MR : start + (i + 1) * _MR] for i in range(count)]


def parse_td_report(body: bytes, body_type: int) -> TdReport:
    """Parse a TD report of ``body_type`` (2: TD 1.0, 3: TD 1.5); lengths are exact."""
    expected = 648 if body_type == BODY_TD15 else 584
    if len(body) != expected:
        raise EvidenceError(f"TD report body is {len(body)} bytes, not {expected}")
    td_attributes, xfam = struct.unpack_from("<QQ", body, 120)
    rtmr0, rtmr1, rtmr2, rtmr3 = _mrs(body, 328, 4)
    mr_td, config_id, owner, owner_config = _mrs(body, 136, 4)
    return TdReport(
        tee_tcb_svn=body[0:16],
        mr_seam=body[16:64],
        mr_signer_seam=body[64:112],
        seam_attributes=body[112:120],
        td_attributes=td_attributes,
        xfam=xfam,
        mr_td=mr_td,
        mr_config_id=config_id,
        mr_owner=owner,
        mr_owner_config=owner_config,
        rtmrs=(rtmr0, rtmr1, rtmr2, rtmr3),
        report_data=body[520:584],
        tee_tcb_svn2=body[584:600] if body_type == BODY_TD15 else None,
        mr_service_td=body[600:648] if body_type == BODY_TD15 else None,
    )


def parse_tdx_quote(data: bytes) -> tuple[QuoteEnvelope, TdReport]:
    """Parse a TDX quote v4/v5; an SGX quote is an EvidenceError."""
    envelope = parse_envelope(data, tee_type=TEE_TDX)
    return envelope, parse_td_report(envelope.body, envelope.body_type)
