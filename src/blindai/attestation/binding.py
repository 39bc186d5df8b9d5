"""The channel binding, one definition for both sides.

The TEE's report data commits to the TLS certificate the server will use:
``report_data[0:32] = SHA-256(certificate DER)`` and the rest zero (64 bytes for SGX, TDX and
SEV-SNP). Nitro carries the same 32-byte digest in ``user_data``, or the certificate's public
key (SubjectPublicKeyInfo DER) in ``public_key``.

Fresh evidence, over a client's nonce (16 to 64 random bytes), also commits to the nonce:

==================  ==============================================
``report_data``     value
==================  ==============================================
``[0:32]``          SHA-256(certificate DER)
``[32:64]``         SHA-256(nonce)
==================  ==============================================

the same 64 bytes on every platform (Nitro: all 64 in ``user_data``). Evidence for another
nonce, or made without one, does not bind: a replayed document is refused.

An NVIDIA GPU beside the CPU TEE answers the SPDM requester nonce
``gpu_nonce(cert) = SHA-256(b"blindai-gpu-nonce" || SHA-256(certificate DER))`` (32 bytes, the
size SPDM takes): the same certificate, in a separate domain so that neither value can stand
for the other.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from blindai.errors import BindingError

__all__ = [
    "GPU_NONCE_LABEL",
    "NONCE_MAX_SIZE",
    "NONCE_MIN_SIZE",
    "REPORT_DATA_SIZE",
    "certificate_digest",
    "check_binding",
    "check_nonce",
    "expected_report_data",
    "gpu_nonce",
    "nonce_digest",
]

REPORT_DATA_SIZE = 64
GPU_NONCE_LABEL = b"blindai-gpu-nonce"
NONCE_MIN_SIZE = 16
"""Fewest bytes a freshness nonce may have (128 bits)."""
NONCE_MAX_SIZE = 64
"""Most bytes a freshness nonce may have."""


def certificate_digest(cert_der: bytes) -> bytes:
    """SHA-256 of the certificate's DER encoding."""
    return hashlib.sha256(cert_der).digest()


def check_nonce(nonce: bytes) -> bytes:
    """``nonce`` when it has 16 to 64 bytes; ValueError otherwise."""
    if not NONCE_MIN_SIZE <= len(nonce) <= NONCE_MAX_SIZE:
        raise ValueError(
            f"a nonce has {NONCE_MIN_SIZE} to {NONCE_MAX_SIZE} bytes, not {len(nonce)}"
        )
    return nonce


def nonce_digest(nonce: bytes) -> bytes:
    """SHA-256 of the nonce: ``report_data[32:64]`` of fresh evidence."""
    return hashlib.sha256(check_nonce(nonce)).digest()


def expected_report_data(
    cert_der: bytes, size: int = REPORT_DATA_SIZE, *, nonce: bytes | None = None
) -> bytes:
    """The report data a TEE must produce for this certificate (and ``nonce``, if given)."""
    tail = nonce_digest(nonce) if nonce is not None else b""
    return (certificate_digest(cert_der) + tail).ljust(size, b"\0")


def gpu_nonce(cert_der: bytes) -> bytes:
    """The 32-byte SPDM nonce a GPU must answer for this certificate."""
    return hashlib.sha256(GPU_NONCE_LABEL + certificate_digest(cert_der)).digest()


def check_binding(
    cert_der: bytes,
    *,
    report_data: bytes | None,
    public_key: bytes | None = None,
    nonce: bytes | None = None,
) -> None:
    """Raise :class:`BindingError` unless the evidence binds ``cert_der`` (and ``nonce``).

    ``report_data`` is the evidence's report data (or Nitro ``user_data``); it must equal the
    expected report data, or, when it is exactly 32 bytes (Nitro ``user_data``), the digest.
    ``public_key`` (Nitro) may instead hold the certificate's SubjectPublicKeyInfo.
    With ``nonce``, only the full 64-byte layout binds: SHA-256(certificate) followed by
    SHA-256(nonce).
    """
    if nonce is not None:
        _check_fresh(cert_der, report_data, nonce)
        return
    digest = certificate_digest(cert_der)
    if report_data is not None:
        want = (
            digest
            if len(report_data) == len(digest)
            else expected_report_data(cert_der, max(len(report_data), REPORT_DATA_SIZE))
        )
        if hmac.compare_digest(report_data, want):
            return
    if public_key is not None:
        try:  # the peer's certificate: OpenSSL took it, cryptography may not
            key = x509.load_der_x509_certificate(cert_der).public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise BindingError(f"the TLS certificate's public key cannot be read: {exc}") from exc
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if hmac.compare_digest(public_key, spki):
            return
    shown = report_data.hex() if report_data is not None else "nothing"
    raise BindingError(
        f"the evidence does not bind this TLS certificate: report data is {shown}, "
        f"expected SHA-256(certificate) {digest.hex()} followed by zeros"
    )


def _check_fresh(cert_der: bytes, report_data: bytes | None, nonce: bytes) -> None:
    want = expected_report_data(cert_der, nonce=nonce)
    if report_data is not None and hmac.compare_digest(report_data, want):
        return
    digest = certificate_digest(cert_der)
    if report_data is not None and hmac.compare_digest(report_data[:32], digest):
        raise BindingError(
            "the evidence binds this TLS certificate but not this connection's nonce: "
            f"report data ends {report_data[32:].hex() or 'early'}, expected SHA-256(nonce) "
            f"{want[32:].hex()} (replayed or stale evidence)"
        )
    shown = report_data.hex() if report_data is not None else "nothing"
    raise BindingError(
        f"the evidence does not bind this TLS certificate and nonce: report data is {shown}, "
        f"expected {want.hex()}"
    )
