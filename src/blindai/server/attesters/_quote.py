"""The few quote and report fields an attester reads: report data and the PCK chain.

Not a parser for verification (that is :mod:`blindai.attestation`): only enough to check that
collected evidence carries our report data, and to find which collateral an SGX quote needs.
"""

from __future__ import annotations

import re
import struct

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from blindai.errors import CollateralUnavailable, EvidenceError

__all__ = [
    "PckChain",
    "check_report_data",
    "pck_chain",
    "sgx_report_data",
    "snp_report_data",
    "tdx_report_data",
]

_HEADER = 48
_SGX_BODY = 384
_TD10_REPORT_DATA = 520  # TEE_TCB_SVN .. RTMR3 precede REPORTDATA in a TD report body
SNP_REPORT_SIZE = 0x4A0
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
_SGX_EXTENSIONS = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_FMSPC_OID_DER = bytes.fromhex("060a2a864886f84d010d0104")  # OID 1.2.840.113741.1.13.1.4


def check_report_data(report_data: bytes) -> None:
    """Raise ValueError unless ``report_data`` is 64 bytes, as the TEEs and the binding expect."""
    if len(report_data) != 64:
        raise ValueError(f"report data must be 64 bytes, got {len(report_data)}")


def _slice(data: bytes, start: int, size: int, what: str) -> bytes:
    if start < 0 or len(data) < start + size:
        raise EvidenceError(f"{what}: evidence truncated ({len(data)} bytes)")
    return data[start : start + size]


def sgx_report_data(quote: bytes) -> bytes:
    """REPORTDATA of an SGX quote (version 3, or 4 with TEE type SGX)."""
    version, _key_type, tee_type = struct.unpack_from("<HHI", _slice(quote, 0, 8, "SGX quote"))
    if version not in (3, 4) or (version == 4 and tee_type != 0):
        raise EvidenceError(f"not an SGX quote v3/v4 (version {version}, TEE type {tee_type:#x})")
    return _slice(quote, _HEADER + 320, 64, "SGX quote")


def tdx_report_data(quote: bytes) -> bytes:
    """REPORTDATA of a TDX quote (version 4, or 5 with a TD report body type 2 or 3)."""
    version, _key_type, tee_type = struct.unpack_from("<HHI", _slice(quote, 0, 8, "TDX quote"))
    if tee_type != 0x81 or version not in (4, 5):
        raise EvidenceError(f"not a TDX quote v4/v5 (version {version}, TEE type {tee_type:#x})")
    body = _HEADER
    if version == 5:
        body_type = struct.unpack_from("<H", _slice(quote, _HEADER, 2, "TDX quote"))[0]
        if body_type not in (2, 3):
            raise EvidenceError(f"TDX quote v5 with unsupported body type {body_type}")
        body += 6
    return _slice(quote, body + _TD10_REPORT_DATA, 64, "TDX quote")


def snp_report_data(report: bytes) -> bytes:
    """REPORT_DATA of an SEV-SNP attestation report (exactly 1184 bytes)."""
    if len(report) != SNP_REPORT_SIZE:
        raise EvidenceError(f"SEV-SNP report is {len(report)} bytes, expected {SNP_REPORT_SIZE}")
    return report[0x50:0x90]


class PckChain:
    """The PCK certificate chain (leaf, PCK CA, root) from an SGX quote's certification data."""

    def __init__(self, certificates: list[x509.Certificate]) -> None:
        if len(certificates) != 3:
            raise CollateralUnavailable(
                f"the quote's PCK chain has {len(certificates)} certificates, expected 3"
            )
        self.leaf, self.ca, self.root = certificates

    @property
    def ca_type(self) -> str:
        """``processor`` or ``platform``: which PCK CA issued the leaf (selects the PCK CRL)."""
        names = self.leaf.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        issuer = str(names[0].value) if names else ""
        for ca in ("processor", "platform"):
            if ca in issuer.lower():
                return ca
        raise CollateralUnavailable(f"unknown PCK CA {issuer!r}: expected Processor or Platform")

    @property
    def fmspc(self) -> str:
        """The platform's FMSPC (6 bytes, uppercase hex), from the leaf's SGX extension."""
        try:
            ext = self.leaf.extensions.get_extension_for_oid(_SGX_EXTENSIONS).value
        except x509.ExtensionNotFound as exc:
            raise CollateralUnavailable("the PCK certificate has no SGX extension") from exc
        der = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
        at = der.find(_FMSPC_OID_DER)
        value = der[at + len(_FMSPC_OID_DER) : at + len(_FMSPC_OID_DER) + 8] if at >= 0 else b""
        if len(value) != 8 or value[:2] != b"\x04\x06":
            raise CollateralUnavailable("the PCK certificate's SGX extension has no FMSPC")
        return value[2:].hex().upper()

    def pem(self, cert: x509.Certificate) -> str:
        """PEM text of one certificate of the chain."""
        return cert.public_bytes(serialization.Encoding.PEM).decode()


def pck_chain(quote: bytes) -> PckChain:
    """The PCK chain of an SGX quote v3 with certification data type 5 (PEM chain)."""
    if struct.unpack_from("<H", _slice(quote, 0, 2, "SGX quote"))[0] != 3:
        raise CollateralUnavailable("collateral is fetched for SGX quotes v3 only")
    at = _HEADER + _SGX_BODY + 4 + 64 + 64 + _SGX_BODY + 64
    (auth_len,) = struct.unpack_from("<H", _slice(quote, at, 2, "SGX quote"))
    at += 2 + auth_len
    cert_type, size = struct.unpack_from("<HI", _slice(quote, at, 6, "SGX quote"))
    if cert_type != 5:
        raise CollateralUnavailable(f"certification data type {cert_type}: expected 5 (PCK chain)")
    blob = _slice(quote, at + 6, size, "SGX quote")
    return PckChain([x509.load_pem_x509_certificate(m) for m in _PEM_CERT.findall(blob)])
