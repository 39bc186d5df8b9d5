"""SGX quote layout: the enclave report body inside a DCAP quote. Strict; no crypto.

The quote envelope is :mod:`blindai.attestation.dcap`'s; this module reads the 384-byte SGX
enclave report it carries. Nothing here is verified.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from blindai.attestation.dcap import TEE_SGX, QuoteEnvelope, parse_envelope
from blindai.errors import EvidenceError

__all__ = ["SgxReportBody", "parse_sgx_quote", "parse_sgx_report"]


@dataclass(frozen=True)
class SgxReportBody:
    """The 384-byte SGX enclave report (untrusted)."""

    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: int
    xfrm: int
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes


#: reserved ranges of the SGX report body, which must be zero
_SGX_RESERVED = ((20, 32), (96, 128), (160, 192), (262, 304))


def parse_sgx_report(body: bytes) -> SgxReportBody:
    """Parse an SGX enclave report body; reserved bytes must be zero."""
    if len(body) != 384:
        raise EvidenceError(f"SGX report body is {len(body)} bytes, not 384")
    for start, end in _SGX_RESERVED:
        if any(body[start:end]):
            raise EvidenceError(f"reserved bytes {start}..{end} of the SGX report are not zero")
    (misc,) = struct.unpack_from("<I", body, 16)
    attributes, xfrm = struct.unpack_from("<QQ", body, 48)
    prod_id, svn, config_svn = struct.unpack_from("<HHH", body, 256)
    return SgxReportBody(
        cpu_svn=body[0:16],
        misc_select=misc,
        isv_ext_prod_id=body[32:48],
        attributes=attributes,
        xfrm=xfrm,
        mr_enclave=body[64:96],
        mr_signer=body[128:160],
        config_id=body[192:256],
        isv_prod_id=prod_id,
        isv_svn=svn,
        config_svn=config_svn,
        isv_family_id=body[304:320],
        report_data=body[320:384],
    )


def parse_sgx_quote(data: bytes) -> tuple[QuoteEnvelope, SgxReportBody]:
    """Parse an SGX quote v3/v4/v5; a TDX quote is an EvidenceError."""
    envelope = parse_envelope(data, tee_type=TEE_SGX)
    return envelope, parse_sgx_report(envelope.body)
