"""The TEE's TLS identity: an ECDSA P-256 key and a self-signed certificate for ``blindai-srv``.

The private key lives in memory only. ``ssl`` can load a key only from a path, so the PEM is
handed over through an anonymous in-memory file (``memfd_create``), never the disk.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from blindai.errors import ConfigurationError
from blindai.protocol.names import SERVER_NAME

__all__ = ["TlsIdentity", "hardened_server_context"]


def hardened_server_context() -> ssl.SSLContext:
    """A TLS 1.2+ server context that refuses renegotiation.

    OpenSSL 3 refuses a client's renegotiation by default, OpenSSL 1.1.1 (which Python may be
    built with) accepts it: a client could then make the server redo its handshake's public-key
    work as often as it likes on one connection, out of reach of the per-connection limits.
    TLS 1.3 has no renegotiation at all.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


@dataclass(frozen=True)
class TlsIdentity:
    """A fresh key pair and its self-signed certificate."""

    cert_der: bytes
    _key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(cls, *, valid_days: int = 365) -> TlsIdentity:
        """Create a new key and certificate (SAN DNS ``blindai-srv``)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=valid_days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.DER), key)

    @property
    def cert_pem(self) -> bytes:
        """The certificate in PEM."""
        return x509.load_der_x509_certificate(self.cert_der).public_bytes(
            serialization.Encoding.PEM
        )

    def key_pem(self) -> bytes:
        """The private key in PKCS#8 PEM, for TLS stacks that take it from memory (gRPC)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def server_context(self) -> ssl.SSLContext:
        """A TLS 1.2+ server context holding the key (through memory, not the disk)."""
        ctx = hardened_server_context()
        key_pem = self.key_pem()
        if not hasattr(os, "memfd_create"):
            raise ConfigurationError("the server needs Linux (memfd_create) to keep its key in RAM")
        fd = os.memfd_create("blindai-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, self.cert_pem + key_pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx
