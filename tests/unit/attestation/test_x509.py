"""Certificates from untrusted bytes are parsed whole when loaded (blindai.attestation._x509).

``cryptography`` parses a certificate's subject, issuer and extensions lazily, and reports a
malformed one with exceptions other than ``ValueError`` too. Real certificates with one bit
flipped (found by search, so the test needs no hand-made DER) must fail where they are loaded,
and every verifier path that reads them must end in a typed error: before, a broken subject in
an SEV-SNP VCEK raised ``ValueError`` from deep in chain building, and a broken issuer in a
quote's PCK certificate did so once its CA type was read.
"""

from __future__ import annotations

import base64
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from blindai.attestation import Endorsements
from blindai.attestation._collateral import pck_chain
from blindai.attestation._x509 import load_der_certificate, load_pem_certificates
from blindai.attestation.snp import SnpPolicy, SnpVerifier
from blindai.errors import ChainError, CollateralUnavailable

NOW = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _pem(der: bytes) -> bytes:
    lines = [base64.b64encode(der)[i : i + 64] for i in range(0, 4 * ((len(der) + 2) // 3), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def _flipped(der: bytes, breaks: Callable[[x509.Certificate], object]) -> bytes:
    """The first one-bit change of ``der`` that still loads but makes ``breaks`` raise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(len(der)):
            for bit in (0x01, 0x80):
                candidate = bytearray(der)
                candidate[i] ^= bit
                try:
                    cert = x509.load_der_x509_certificate(bytes(candidate))
                except (ValueError, x509.InvalidVersion):
                    continue
                try:
                    breaks(cert)
                except Exception:
                    return bytes(candidate)
    raise AssertionError("no such bit flip")  # pragma: no cover


LAZY: dict[str, Callable[[x509.Certificate], object]] = {
    "subject": lambda c: c.subject,
    "issuer": lambda c: c.issuer,
    "extensions": lambda c: c.extensions,  # e.g. DuplicateExtension, not a ValueError
}


@pytest.fixture(scope="module")
def vcek(evidence_dir: Path) -> bytes:
    return (evidence_dir / "sev-snp" / "virtee-sev-milan" / "vcek.der").read_bytes()


@pytest.mark.parametrize("field", sorted(LAZY))
def test_a_malformed_field_fails_when_loaded(vcek: bytes, field: str) -> None:
    bad = _flipped(vcek, LAZY[field])
    with pytest.raises(ValueError, match="malformed certificate"):
        load_der_certificate(bad)
    with pytest.raises(ValueError, match="malformed certificate"):
        load_pem_certificates(_pem(bad))
    assert load_der_certificate(vcek).subject == load_pem_certificates(_pem(vcek))[0].subject


def test_an_invalid_version_is_a_value_error(vcek: bytes) -> None:
    bad = bytearray(vcek)
    version = bad.index(b"\xa0\x03\x02\x01\x02") + 4  # [0] EXPLICIT INTEGER 2 (v3)
    bad[version] = 3  # x509.InvalidVersion is not a ValueError
    with pytest.raises(ValueError, match="malformed certificate"):
        load_der_certificate(bytes(bad))


@pytest.mark.parametrize("field", sorted(LAZY))
def test_snp_vcek_with_a_malformed_field_is_a_chain_error(
    evidence_dir: Path, vcek: bytes, field: str
) -> None:
    folder = evidence_dir / "sev-snp" / "virtee-sev-milan"
    report = (folder / "report.bin").read_bytes()
    chain = (folder / "ask_ark_milan.pem").read_bytes()
    policy = SnpPolicy.from_mapping(
        {"measurement": "00" * 48, "allow_debug": True, "allow_any_tcb": True}
    )
    bad = _flipped(vcek, LAZY[field])
    with pytest.raises(ChainError, match=r"certificate blob 0: unreadable DER \(malformed certif"):
        SnpVerifier.with_embedded_roots().verify(
            report, policy, now=NOW, endorsements=Endorsements(certificates=(bad, chain))
        )


def test_quote_pck_certificate_with_a_malformed_issuer_is_collateral_unavailable(
    evidence_dir: Path,
) -> None:
    quote = (evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4" / "quote.bin").read_bytes()
    pems = load_pem_certificates(quote[quote.index(b"-----BEGIN") :].rstrip(b"\0"))
    leaf = pems[0].public_bytes(Encoding.DER)
    leaf_pem = _pem(leaf)
    assert leaf_pem in quote  # the same PEM lines: a one-bit flip keeps every length
    broken = quote.replace(leaf_pem, _pem(_flipped(leaf, LAZY["issuer"])))
    with pytest.raises(CollateralUnavailable, match="not PEM certificates"):
        pck_chain(broken).ca_type  # noqa: B018


def test_a_bit_string_name_attribute_of_another_type_is_a_value_error(evidence_dir: Path) -> None:
    """One base64 digit of the SGX set's PCK CA certificate changed ('T' to 'D'): its issuer
    then holds a BIT STRING attribute that is not x500UniqueIdentifier, which cryptography's
    NameAttribute refuses with TypeError, untyped: a 500 on a server's /collateral for a
    host-made quote, a traceback in blindai attest for a server's."""
    quote = (evidence_dir / "sgx-dcap" / "phala-dcap-qvl-sgx" / "quote.bin").read_bytes()
    start = quote.index(b"-----BEGIN CERTIFICATE-----")
    at = start + 441
    assert quote[at : at + 1] == b"T"
    broken = quote[:at] + b"D" + quote[at + 1 :]  # same length: the quote's sizes hold
    with pytest.raises(ValueError, match="malformed certificate: oid must be X500_UNIQUE"):
        load_pem_certificates(broken[start:].rstrip(b"\0"))
    with pytest.raises(CollateralUnavailable, match="not PEM certificates"):
        pck_chain(broken)
