"""HTTP transports: plain for the unattested port, pinned TLS for the attested ports.

The attested transport trusts exactly one certificate (the one the evidence binds) and checks
the name ``blindai-srv`` whatever address was dialled. It is built on ``http.client`` with an
explicit ``ssl.SSLContext``, so no environment variable (``REQUESTS_CA_BUNDLE``,
``SSL_CERT_FILE``, proxies) can change what it trusts or where it connects.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from blindai.errors import BindingError, ProtocolError

__all__ = ["SERVER_NAME", "HttpResponse", "PinnedTlsTransport", "PlainTransport"]

SERVER_NAME = "blindai-srv"


@dataclass(frozen=True)
class HttpResponse:
    """Status, headers (lower-case names) and body of one response."""

    status: int
    headers: dict[str, str]
    body: bytes


class _PinnedConnection(http.client.HTTPSConnection):
    """An HTTPS connection whose server name is always ``blindai-srv``."""

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=SERVER_NAME)  # type: ignore[attr-defined]


class _Transport:
    """Keep-alive HTTP/1.1 over one connection per thread, retried once on a stale socket."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _new(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._new()
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
    ) -> HttpResponse:
        """Send one request; reconnects once if the kept-alive socket was closed.

        ``body`` may be a factory of chunks (with a Content-Length header), called per attempt.
        """
        for attempt in (0, 1):
            conn = self._conn()
            payload = body() if callable(body) else body
            try:
                conn.request(method, path, body=payload, headers=headers or {})
                resp = conn.getresponse()
                data = resp.read()
                return HttpResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if attempt:
                    raise
            except ssl.SSLCertVerificationError as exc:
                conn.close()
                raise BindingError(
                    f"the attested port presented a certificate other than the attested one: "
                    f"{exc.verify_message}"
                ) from exc
        raise ProtocolError("unreachable")  # pragma: no cover

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
        pem = x509.load_der_x509_certificate(cert_der).public_bytes(serialization.Encoding.PEM)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cadata=pem.decode("ascii"))
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["http/1.1"])
        self._ctx = ctx

    def _new(self) -> http.client.HTTPConnection:
        return _PinnedConnection(self.host, self.port, timeout=self.timeout, context=self._ctx)
