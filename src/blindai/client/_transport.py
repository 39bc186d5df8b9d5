"""HTTP transports: plain for the unattested port, pinned TLS for the attested ports.

The attested transport trusts exactly one certificate (the one the evidence binds) and checks
the name ``blindai-srv`` whatever address was dialled. It uses an explicit
``ssl.SSLContext`` on a plain socket, so no environment variable (``REQUESTS_CA_BUNDLE``,
``SSL_CERT_FILE``, proxies) can change what it trusts or where it connects.

Failures are typed: :class:`~blindai.errors.NetworkError` (``RequestTimeout``) when the socket
fails, :class:`~blindai.errors.WrongPort` when the port serves another of the server's roles,
:class:`~blindai.errors.ConfigurationError` once the transport is closed.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from blindai.client._http11 import DEFAULT_MAX_BODY, Http11Connection, HttpResponse
from blindai.client._ports import PortRole, speaks_http, speaks_tls, wrong_port
from blindai.errors import (
    BindingError,
    ConfigurationError,
    NetworkError,
    ProtocolError,
    RequestTimeout,
)
from blindai.protocol.names import SERVER_NAME

__all__ = ["HttpResponse", "PinnedTlsTransport", "PlainTransport", "PortRole"]


class _Transport:
    """Keep-alive HTTP/1.1, one connection per thread; ``close()`` is final."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        *,
        role: PortRole,
        max_response_bytes: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.role = role
        self.max_response_bytes = max_response_bytes
        self._local = threading.local()
        self._all: list[Http11Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def label(self) -> str:
        """How error messages name this port, e.g. ``the attested port 10.0.0.5:9924``."""
        return f"{self.role.flag_text} {self.host}:{self.port}"

    def _socket(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _conn(self) -> Http11Connection:
        conn: Http11Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = Http11Connection(
                self._socket,
                f"{self.host}:{self.port}",
                label=self.label,
                max_body=self.max_response_bytes,
            )
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
        if self._closed:
            raise ConfigurationError("this connection is closed: open a new one")
        return self._conn().request(method, path, body, headers or {}, body_length)

    def close(self) -> None:
        """Close every connection this transport opened; later requests are refused."""
        with self._lock:
            self._closed = True
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


class PlainTransport(_Transport):
    """Plain HTTP to the unattested port: nothing from it is trusted before verification."""

    def __init__(
        self, host: str, port: int, timeout: float, *, max_response_bytes: int = DEFAULT_MAX_BODY
    ) -> None:
        super().__init__(
            host, port, timeout, role=PortRole.UNATTESTED, max_response_bytes=max_response_bytes
        )

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Callable[[], Iterable[bytes]] | None = None,
        headers: dict[str, str] | None = None,
        body_length: int | None = None,
    ) -> HttpResponse:
        """Send one request; a port that answers in TLS is reported as :class:`WrongPort`."""
        try:
            return super().request(method, path, body, headers, body_length)
        except RequestTimeout:
            raise
        except (NetworkError, ProtocolError) as exc:
            if speaks_tls(self.host, self.port, self.timeout):
                raise wrong_port(self.port, self.role, found="TLS") from exc
            raise


class PinnedTlsTransport(_Transport):
    """TLS that trusts only ``cert_der`` and checks the name ``blindai-srv``.

    ``role``: the attested (inference) port or the management port, for error messages.
    """

    def __init__(
        self,
        host: str,
        port: int,
        cert_der: bytes,
        timeout: float,
        *,
        role: PortRole = PortRole.ATTESTED,
        max_response_bytes: int = DEFAULT_MAX_BODY,
    ) -> None:
        super().__init__(host, port, timeout, role=role, max_response_bytes=max_response_bytes)
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
            # a TLS EOF without close_notify is an error, not a silent end of data
            return self._ctx.wrap_socket(
                sock, server_hostname=SERVER_NAME, suppress_ragged_eofs=False
            )
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise BindingError(
                f"{self.label} presented a certificate other than the attested one: "
                f"{exc.verify_message}"
            ) from exc
        except ssl.SSLError as exc:
            sock.close()
            if speaks_http(self.host, self.port, self.timeout):
                raise wrong_port(self.port, self.role, found="plain HTTP") from exc
            raise NetworkError(
                f"TLS handshake with {self.label} failed: {exc.reason or exc}"
            ) from exc
        except BaseException:
            sock.close()
            raise
