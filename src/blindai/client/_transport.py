"""HTTP transports: plain for the unattested port, pinned TLS for the attested ports.

The attested transport trusts exactly one certificate (the one the evidence binds) and checks
the name ``blindai-srv`` whatever address was dialled. It uses an explicit
``ssl.SSLContext`` on a plain socket, so no environment variable (``REQUESTS_CA_BUNDLE``,
``SSL_CERT_FILE``, proxies) can change what it trusts or where it connects.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from blindai.client._http11 import Http11Connection, HttpResponse
from blindai.errors import BindingError

__all__ = ["SERVER_NAME", "HttpResponse", "PinnedTlsTransport", "PlainTransport"]

SERVER_NAME = "blindai-srv"


class _Transport:
    """Keep-alive HTTP/1.1, one connection per thread."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._local = threading.local()
        self._all: list[Http11Connection] = []
        self._lock = threading.Lock()

    def _socket(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _conn(self) -> Http11Connection:
        conn: Http11Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = Http11Connection(self._socket, f"{self.host}:{self.port}")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Callable[[], Iterable[bytes]] | None = None,
        headers: dict[str, str] | None = None,
        body_length: int | None = None,
    ) -> HttpResponse:
        """Send one request. A streamed ``body`` is a factory of chunks with ``body_length``."""
        return self._conn().request(method, path, body, headers or {}, body_length)

    def close(self) -> None:
        """Close every connection this transport opened."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


class PlainTransport(_Transport):
    """Plain HTTP to the unattested port: nothing from it is trusted before verification."""


class PinnedTlsTransport(_Transport):
    """TLS that trusts only ``cert_der`` and checks the name ``blindai-srv``."""

    def __init__(self, host: str, port: int, cert_der: bytes, timeout: float) -> None:
        super().__init__(host, port, timeout)
        self.cert_der = cert_der
        pem = x509.load_der_x509_certificate(cert_der).public_bytes(serialization.Encoding.PEM)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cadata=pem.decode("ascii"))
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["http/1.1"])
        self._ctx = ctx

    def _socket(self) -> socket.socket:
        sock = super()._socket()
        try:
            return self._ctx.wrap_socket(sock, server_hostname=SERVER_NAME)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise BindingError(
                "the attested port presented a certificate other than the attested one: "
                f"{exc.verify_message}"
            ) from exc
        except BaseException:
            sock.close()
            raise
