"""The server's TLS contexts: TLS 1.2 at least, and no renegotiation whatever OpenSSL's default."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

from blindai.server.main import _unattested_tls
from blindai.server.settings import ServerSettings
from blindai.server.tls import TlsIdentity


def _hardened(ctx: ssl.SSLContext) -> None:
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_RENEGOTIATION


def test_the_attested_ports_refuse_renegotiation() -> None:
    _hardened(TlsIdentity.generate().server_context())


def test_the_unattested_port_over_https_refuses_renegotiation(tmp_path: Path) -> None:
    leaf = trustme.CA().issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ctx = _unattested_tls(ServerSettings(unattested_tls_cert=cert, unattested_tls_key=key))
    assert ctx is not None
    _hardened(ctx)
