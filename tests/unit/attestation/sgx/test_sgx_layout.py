"""The DCAP quote envelope parser on synthetic quotes: exact lengths, known versions only."""

from __future__ import annotations

import json
import struct
from datetime import datetime, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from blindai.attestation.dcap import (
    INTEL_QE_VENDOR_ID,
    DcapResult,
    check_report_agrees,
    collateral_to_blindai_v06,
    parse_collateral,
    parse_envelope,
)
from blindai.attestation.dcap._verify import _pinned_root
from blindai.attestation.sgx._layout import parse_sgx_report
from blindai.attestation.tdx._layout import parse_td_report
from blindai.errors import ChainError, CollateralError, EvidenceError
from tests.unit.attestation.dcap_sets import DcapSet

CHAIN = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n\x00"


def header(version: int = 3, key_type: int = 2, tee: int = 0) -> bytes:
    return struct.pack("<HHIHH", version, key_type, tee, 10, 15) + INTEL_QE_VENDOR_ID + bytes(20)


def pck_section(chain: bytes = CHAIN, cert_type: int = 5, extra: bytes = b"") -> bytes:
    """QE report, its signature, empty QE auth data, then certification data."""
    return (
        bytes(384 + 64)
        + struct.pack("<H", 0)
        + struct.pack("<HI", cert_type, len(chain))
        + (chain + extra)
    )


def quote(
    version: int = 3,
    tee: int = 0,
    body: bytes = bytes(384),
    v5_body_type: int | None = None,
    section: bytes | None = None,
    outer_type: int = 6,
    key_type: int = 2,
) -> bytes:
    inner = pck_section() if section is None else section
    sig = bytes(128) + (
        inner if version == 3 else struct.pack("<HI", outer_type, len(inner)) + inner
    )
    prefix = b"" if v5_body_type is None else struct.pack("<HI", v5_body_type, len(body))
    return header(version, key_type, tee) + prefix + body + struct.pack("<I", len(sig)) + sig


def test_a_well_formed_v3_quote_parses() -> None:
    envelope = parse_envelope(quote() + b"trailing")
    assert (envelope.header.version, envelope.body_type) == (3, 1)
    assert envelope.pck_chain_pem == CHAIN.rstrip(b"\x00")
    assert not envelope.quote.endswith(b"trailing")


def test_v4_and_v5_tdx_quotes_parse() -> None:
    assert parse_envelope(quote(4, 0x81, bytes(584))).body_type == 2
    assert parse_envelope(quote(5, 0x81, bytes(648), v5_body_type=3)).body_type == 3
    assert parse_envelope(quote(5, 0, bytes(384), v5_body_type=1)).body_type == 1


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (quote(key_type=3), "attestation key type"),
        (quote(tee=0x81), "TEE type"),
        (quote(4, 0x82, bytes(584)), "TEE type"),
        (quote(5, 0, bytes(584), v5_body_type=2), "does not fit"),
        (quote(5, 0x81, bytes(600), v5_body_type=3), "does not fit"),
        (quote(5, 0x81, bytes(648), v5_body_type=9), "body type"),
        (quote(section=pck_section(cert_type=1)), "not a PCK chain"),
        (quote(section=pck_section(extra=b"\x00")), "unexpected bytes"),
        (quote(section=pck_section(chain=bytes(8))), "empty"),
        (quote(4, 0x81, bytes(584), outer_type=5), "not a QE report"),
        (header()[:-1], "truncated"),
    ],
)
def test_malformed_quotes_are_evidence_errors(data: bytes, match: str) -> None:
    with pytest.raises(EvidenceError, match=match):
        parse_envelope(data)


def test_body_lengths_are_exact() -> None:
    with pytest.raises(EvidenceError):
        parse_sgx_report(bytes(383))
    with pytest.raises(EvidenceError):
        parse_td_report(bytes(585), 2)


def self_signed_pem() -> bytes:
    """One generated certificate: a chain too short to reach any root."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=timezone.utc))
        .not_valid_after(datetime(2030, 1, 1, tzinfo=timezone.utc))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM)


@pytest.mark.parametrize("chain", [b"not pem", CHAIN.rstrip(b"\x00"), None])
def test_a_chain_that_is_unreadable_or_too_short_is_a_chain_error(chain: bytes | None) -> None:
    with pytest.raises(ChainError):
        _pinned_root(self_signed_pem() if chain is None else chain, frozenset())


def test_no_blindai_06_map_for_a_quote_with_a_one_certificate_chain(phala_sgx: DcapSet) -> None:
    one = quote(section=pck_section(chain=self_signed_pem()))
    with pytest.raises(EvidenceError, match="too short"):
        collateral_to_blindai_v06(phala_sgx.collateral, one)


def test_collateral_dates_must_carry_a_time_zone(phala_sgx: DcapSet) -> None:
    doc = json.loads(phala_sgx.collateral)
    doc["tcb_info"] = doc["tcb_info"].replace('Z"', '"')
    with pytest.raises(CollateralError, match="issueDate"):
        parse_collateral(json.dumps(doc).encode()).windows()


@pytest.mark.parametrize(
    "report",
    [
        {"SgxEnclave": {"mr_enclave": "00" * 32, "report_data": "11" * 64}},
        {"TD10": {"mr_td": "00" * 48, "report_data": "11" * 64}},
        {"TD15": {"base": {"mr_td": "00" * 48, "report_data": "11" * 64}}},
    ],
)
def test_the_verified_report_must_match_the_parsed_body(report: dict[str, object]) -> None:
    result = DcapResult("UpToDate", (), bytes(6), report, 17)
    size = 32 if "SgxEnclave" in report else 48
    check_report_agrees(result, bytes(size), b"\x11" * 64)
    with pytest.raises(EvidenceError, match="disagree"):
        check_report_agrees(result, bytes(size), bytes(64))
    with pytest.raises(EvidenceError, match="disagree"):
        check_report_agrees(result, b"\x01" * size, b"\x11" * 64)


@pytest.mark.parametrize("report", [{}, {"TD10": {}, "TD15": {}}, {"TD10": "x"}])
def test_an_unexpected_verified_report_is_refused(report: dict[str, object]) -> None:
    with pytest.raises(EvidenceError):
        check_report_agrees(DcapResult("UpToDate", (), bytes(6), report, 17), bytes(48), bytes(64))
