"""Which collateral a quote needs: its PCK chain (FMSPC, PCK CA, TEE), on real and derived data."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from blindai.attestation._collateral import (
    FetchResponse,
    PckChain,
    PcsCollateralSource,
    _distribution_point,
    pck_chain,
)
from blindai.errors import CollateralUnavailable

from .pcs_fakes import API, FakeFetcher


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


def test_bad_next_update_is_collateral_unavailable(sgx_set: Path, fake_pcs: FakeFetcher):
    url = f"{API}/tcb?fmspc=00A067110000"
    answer = fake_pcs.answers[url]
    body = answer.body.replace(b'"nextUpdate":"2025-07-19T10:56:11Z"', b'"nextUpdate":"soon"')
    assert body != answer.body
    fake_pcs.answers[url] = FetchResponse(body, answer.headers)
    source = PcsCollateralSource(fake_pcs)
    with pytest.raises(CollateralUnavailable, match="nextUpdate"):
        source.for_quote((sgx_set / "quote.bin").read_bytes())


def test_pck_chain_that_is_not_pem(sgx_set: Path):
    quote = (sgx_set / "quote.bin").read_bytes()
    garbled = quote.replace(b"-----BEGIN CERTIFICATE-----", b"-----BEGIN CERTIFICATX-----")
    assert len(garbled) == len(quote) and garbled != quote
    with pytest.raises(CollateralUnavailable, match="not PEM"):
        pck_chain(garbled)
