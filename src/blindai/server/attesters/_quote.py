"""What an attester reads in the evidence it collected: report data, and an SGX quote's PCK chain.

Parsing is the verifier's (:mod:`blindai.attestation`'s strict ``_layout`` modules): an
attester checks that collected evidence carries our report data, and finds which collateral an
SGX quote needs (FMSPC, PCK CA). Nothing here is verified.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from blindai.attestation.claims import EvidenceKind
from blindai.attestation.sgx._layout import parse_envelope, parse_sgx_quote
from blindai.attestation.snp._layout import parse_report
from blindai.attestation.tdx._layout import parse_tdx_quote
from blindai.errors import CollateralUnavailable, EvidenceError

__all__ = ["PckChain", "carried_report_data", "check_report_data", "pck_chain"]

_SGX_EXTENSIONS = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_FMSPC_OID_DER = bytes.fromhex("060a2a864886f84d010d0104")  # OID 1.2.840.113741.1.13.1.4


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
    try:
        envelope = parse_envelope(quote)
    except EvidenceError as exc:
        raise CollateralUnavailable(f"no PCK chain in the quote: {exc}") from exc
    if envelope.header.version != 3:
        raise CollateralUnavailable("collateral is fetched for SGX quotes v3 only")
    try:
        certificates = x509.load_pem_x509_certificates(envelope.pck_chain_pem)
    except ValueError as exc:
        raise CollateralUnavailable("the quote's PCK chain is not PEM certificates") from exc
    return PckChain(certificates)
