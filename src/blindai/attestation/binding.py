"""The channel binding, one definition for both sides.

The TEE's report data commits to the TLS certificate the server will use:
``report_data[0:32] = SHA-256(certificate DER)`` and the rest zero (64 bytes for SGX, TDX and
SEV-SNP). Nitro carries the same 32-byte digest in ``user_data``, or the certificate's public
key (SubjectPublicKeyInfo DER) in ``public_key``.

An NVIDIA GPU beside the CPU TEE answers the SPDM requester nonce
``gpu_nonce(cert) = SHA-256(b"blindai-gpu-nonce" || SHA-256(certificate DER))`` (32 bytes, the
size SPDM takes): the same certificate, in a separate domain so that neither value can stand
for the other.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from blindai.errors import BindingError

__all__ = [
    "GPU_NONCE_LABEL",
    "REPORT_DATA_SIZE",
    "certificate_digest",
    "check_binding",
    "expected_report_data",
    "gpu_nonce",
]

REPORT_DATA_SIZE = 64
GPU_NONCE_LABEL = b"blindai-gpu-nonce"


def certificate_digest(cert_der: bytes) -> bytes:
    """SHA-256 of the certificate's DER encoding."""
    return hashlib.sha256(cert_der).digest()


def expected_report_data(cert_der: bytes, size: int = REPORT_DATA_SIZE) -> bytes:
    """The report data a TEE must produce for this certificate."""
    return certificate_digest(cert_der).ljust(size, b"\0")


def gpu_nonce(cert_der: bytes) -> bytes:
    """The 32-byte SPDM nonce a GPU must answer for this certificate."""
    return hashlib.sha256(GPU_NONCE_LABEL + certificate_digest(cert_der)).digest()


def check_binding(
    cert_der: bytes,
    *,
    report_data: bytes | None,
    public_key: bytes | None = None,
) -> None:
    """Raise :class:`BindingError` unless the evidence binds ``cert_der``.

    ``report_data`` is the evidence's report data (or Nitro ``user_data``); it must equal the
    expected report data, or, when it is exactly 32 bytes (Nitro ``user_data``), the digest.
    ``public_key`` (Nitro) may instead hold the certificate's SubjectPublicKeyInfo.
    """
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
        spki = (
            x509.load_der_x509_certificate(cert_der)
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        if hmac.compare_digest(public_key, spki):
            return
    shown = report_data.hex() if report_data is not None else "nothing"
    raise BindingError(
        f"the evidence does not bind this TLS certificate: report data is {shown}, "
        f"expected SHA-256(certificate) {digest.hex()} followed by zeros"
    )
