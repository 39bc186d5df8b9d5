"""The few quote and report fields attesters read, on real evidence and derived negatives."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from blindai.attestation.claims import EvidenceKind
from blindai.errors import CollateralUnavailable, EvidenceError
from blindai.server.attesters._pcs import _distribution_point
from blindai.server.attesters._quote import PckChain, carried_report_data, pck_chain
from blindai.server.attesters._sgx_collateral import SgxCollateral


def test_report_data_of_each_kind(evidence_dir: Path):
    sgx = (evidence_dir / "sgx-dcap" / "phala-dcap-qvl-sgx" / "quote.bin").read_bytes()
    assert carried_report_data(EvidenceKind.SGX, sgx) == b"Hello, world!".ljust(64, b"\0")
    tdx = (evidence_dir / "tdx" / "go-tdx-guest-spr-e4" / "quote.bin").read_bytes()
    assert carried_report_data(EvidenceKind.TDX, tdx).hex().startswith("6c62dec1b8191749")
    tdx5 = (evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v5-outdated" / "quote.bin").read_bytes()
    assert carried_report_data(EvidenceKind.TDX, tdx5).hex().startswith("d2142b643598eb5f")
    snp = (evidence_dir / "sev-snp" / "trustee-milan-vlek" / "report.bin").read_bytes()
    assert carried_report_data(EvidenceKind.SEV_SNP, snp).hex().startswith("819770b7e6ea6df8")


def test_kinds_are_not_confused(evidence_dir: Path):
    sgx = (evidence_dir / "sgx-dcap" / "phala-dcap-qvl-sgx" / "quote.bin").read_bytes()
    tdx = (evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4" / "quote.bin").read_bytes()
    with pytest.raises(EvidenceError, match="not a TDX quote"):
        carried_report_data(EvidenceKind.TDX, sgx)
    with pytest.raises(EvidenceError, match="not an SGX quote"):
        carried_report_data(EvidenceKind.SGX, tdx)
    tdx5 = bytearray(
        (evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v5-outdated" / "quote.bin").read_bytes()
    )
    tdx5[48] = 1  # body type 1 (SGX) in a v5 TDX quote
    with pytest.raises(EvidenceError, match="body type 1"):
        carried_report_data(EvidenceKind.TDX, bytes(tdx5))


def test_pck_chain_fields(evidence_dir: Path):
    automata = (
        evidence_dir / "sgx-dcap" / "automata-fmspc-00606a000000" / "quote.bin"
    ).read_bytes()
    chain = pck_chain(automata)
    assert (chain.fmspc, chain.ca_type) == ("00606A000000", "platform")


def _self_signed(name: str, extensions: Sequence[x509.ExtensionType] = ()) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(key, hashes.SHA256())


def test_pck_chain_refusals():
    other = _self_signed("Some Other CA")
    with pytest.raises(CollateralUnavailable, match="2 certificates"):
        PckChain([other, other])
    chain = PckChain([other, other, other])
    with pytest.raises(CollateralUnavailable, match="unknown PCK CA"):
        _ = chain.ca_type
    with pytest.raises(CollateralUnavailable, match="no SGX extension"):
        _ = chain.fmspc
    sgx_ext = x509.UnrecognizedExtension(
        x509.ObjectIdentifier("1.2.840.113741.1.13.1"), b"\x30\x00"
    )
    with pytest.raises(CollateralUnavailable, match="no FMSPC"):
        _ = PckChain([_self_signed("x", [sgx_ext])] * 3).fmspc
    with pytest.raises(CollateralUnavailable, match="no CRL distribution point"):
        _distribution_point(other)
    email_only = x509.CRLDistributionPoints(
        [x509.DistributionPoint([x509.RFC822Name("crl@example.com")], None, None, None)]
    )
    with pytest.raises(CollateralUnavailable, match="URL"):
        _distribution_point(_self_signed("root", [email_only]))


def _collateral(sgx_set: Path) -> SgxCollateral:
    derived = sgx_set / "derived"
    return SgxCollateral(
        pck_certificate="",
        pck_signing_chain="",
        pck_crl_issuer_chain="",
        pck_crl=(derived / "pck_crl.der").read_bytes(),
        root_ca_crl=(derived / "root_ca_crl.der").read_bytes(),
        tcb_info_body=(derived / "tcb_info.json").read_text(),
        tcb_info_issuer_chain="",
        qe_identity_body=(derived / "qe_identity.json").read_text(),
        qe_identity_issuer_chain="",
    )


def test_next_update_is_the_earliest(sgx_set: Path):
    expected = datetime.datetime(2025, 7, 19, 10, 1, 18, tzinfo=datetime.timezone.utc)
    assert _collateral(sgx_set).next_update() == expected


def test_bad_next_update_is_collateral_unavailable(sgx_set: Path):
    collateral = _collateral(sgx_set)
    body = collateral.tcb_info_body.replace(
        '"nextUpdate":"2025-07-19T10:56:11Z"', '"nextUpdate":"soon"'
    )
    assert body != collateral.tcb_info_body
    with pytest.raises(CollateralUnavailable, match="nextUpdate"):
        dataclasses.replace(collateral, tcb_info_body=body).next_update()


def test_no_report_data_in_other_kinds():
    with pytest.raises(ValueError, match="nitro"):
        carried_report_data(EvidenceKind.NITRO, b"")


def test_pck_chain_that_is_not_pem(sgx_set: Path):
    quote = (sgx_set / "quote.bin").read_bytes()
    garbled = quote.replace(b"-----BEGIN CERTIFICATE-----", b"-----BEGIN CERTIFICATX-----")
    assert len(garbled) == len(quote) and garbled != quote
    with pytest.raises(CollateralUnavailable, match="not PEM"):
        pck_chain(garbled)
