"""X.509 certificates from untrusted bytes, parsed whole when loaded.

``cryptography`` parses a certificate's subject, issuer and extensions only when first read,
and reports a malformed one with exceptions other than ``ValueError`` too
(``InvalidVersion``, ``DuplicateExtension``, ``UnsupportedGeneralNameType``, a TypeError from
``NameAttribute``). Loading through this module reads those fields at once, so that every
malformed certificate is a ``ValueError`` where it is loaded, which each caller turns into its
own typed error, and never an untyped exception later, deep in chain building.
"""

from __future__ import annotations

from cryptography import x509

__all__ = ["load_der_certificate", "load_pem_certificates"]

_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


#: what reading a field may raise besides: ``NameAttribute`` raises TypeError for a BIT STRING
#: attribute of another type than x500UniqueIdentifier (one changed base64 digit of an Intel PCK
#: CA certificate does it)
_FIELD_ERRORS: tuple[type[Exception], ...] = (*_ERRORS, TypeError)


def _whole(cert: x509.Certificate) -> x509.Certificate:
    try:
        cert.subject  # noqa: B018 -- read for its side effect: parsing
        cert.issuer  # noqa: B018
        cert.extensions  # noqa: B018
    except _FIELD_ERRORS as exc:
        raise ValueError(f"malformed certificate: {exc}") from None
    return cert


def load_der_certificate(der: bytes) -> x509.Certificate:
    """One DER certificate; ``ValueError`` when any part of it is malformed."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except _ERRORS as exc:
        raise ValueError(f"malformed certificate: {exc}") from None
    return _whole(cert)


def load_pem_certificates(blob: bytes) -> list[x509.Certificate]:
    """Every PEM certificate in ``blob``; ``ValueError`` when none, or any is malformed."""
    try:
        certs = x509.load_pem_x509_certificates(blob)
    except _ERRORS as exc:
        raise ValueError(f"malformed certificate: {exc}") from None
    return [_whole(c) for c in certs]
