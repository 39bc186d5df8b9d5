"""Fresh evidence: report_data[0:32] = SHA-256(certificate), [32:64] = SHA-256(nonce)."""

from __future__ import annotations

import hashlib

import pytest

from blindai.attestation.binding import (
    NONCE_MAX_SIZE,
    NONCE_MIN_SIZE,
    check_binding,
    check_nonce,
    expected_report_data,
    nonce_digest,
)
from blindai.errors import BindingError
from blindai.server.tls import TlsIdentity

NONCE = bytes(range(32))


@pytest.fixture(scope="module")
def cert() -> bytes:
    return TlsIdentity.generate().cert_der


def test_layout(cert: bytes):
    data = expected_report_data(cert, nonce=NONCE)
    assert data == hashlib.sha256(cert).digest() + hashlib.sha256(NONCE).digest()
    assert nonce_digest(NONCE) == data[32:]


def test_fresh_evidence_binds(cert: bytes):
    check_binding(cert, report_data=expected_report_data(cert, nonce=NONCE), nonce=NONCE)


def test_evidence_without_the_nonce_is_refused_as_replayed(cert: bytes):
    with pytest.raises(BindingError, match="not this connection's nonce"):
        check_binding(cert, report_data=expected_report_data(cert), nonce=NONCE)


def test_evidence_for_another_nonce_is_refused(cert: bytes):
    old = expected_report_data(cert, nonce=b"\x01" * 32)
    with pytest.raises(BindingError, match="replayed or stale"):
        check_binding(cert, report_data=old, nonce=NONCE)


def test_the_32_byte_nitro_form_carries_no_nonce(cert: bytes):
    with pytest.raises(BindingError, match="ends early"):
        check_binding(cert, report_data=hashlib.sha256(cert).digest(), nonce=NONCE)


def test_a_public_key_alone_carries_no_nonce(cert: bytes):
    """Nitro's public_key binding cannot stand for a nonce: only report data counts."""
    with pytest.raises(BindingError, match="does not bind this TLS certificate and nonce"):
        check_binding(cert, report_data=None, public_key=b"spki", nonce=NONCE)


def test_fresh_evidence_of_another_certificate_is_refused(cert: bytes):
    other = TlsIdentity.generate().cert_der
    with pytest.raises(BindingError, match="does not bind this TLS certificate and nonce"):
        check_binding(cert, report_data=expected_report_data(other, nonce=NONCE), nonce=NONCE)


def test_fresh_evidence_does_not_pass_a_check_without_nonce(cert: bytes):
    """A client not asking for freshness still wants the zero tail: fresh data is not it."""
    with pytest.raises(BindingError):
        check_binding(cert, report_data=expected_report_data(cert, nonce=NONCE))


@pytest.mark.parametrize("size", [0, NONCE_MIN_SIZE - 1, NONCE_MAX_SIZE + 1])
def test_nonce_sizes_refused(size: int):
    with pytest.raises(ValueError, match="nonce has 16 to 64 bytes"):
        check_nonce(bytes(size))


@pytest.mark.parametrize("size", [NONCE_MIN_SIZE, NONCE_MAX_SIZE])
def test_nonce_sizes_accepted(size: int):
    assert check_nonce(bytes(size)) == bytes(size)
