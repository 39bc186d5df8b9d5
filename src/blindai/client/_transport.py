"""HTTP transports: plain for the unattested port, attested TLS for the attested ports.

:class:`AttestedTlsTransport` admits each new TLS connection only once a
:class:`~blindai.client._peers.PeerGate` has verified the certificate that connection presents
(from its cache, or by ``GET /attestation`` on that very connection): so every connection, to
whichever replica a load balancer sends it, trusts exactly a certificate that verified evidence
binds. The TLS layer itself checks no chain or name (the certificate is self-signed; what makes
it trusted is the evidence), but the handshake still proves that the peer holds the private key
of the certificate it presented, and no request is sent before the gate admits it.
:class:`PinnedTlsTransport` trusts exactly one certificate given in advance and checks the name
``blindai-srv`` whatever address was dialled. It uses an explicit
``ssl.SSLContext`` on a plain socket, so no environment variable (``REQUESTS_CA_BUNDLE``,
``SSL_CERT_FILE``, proxies) can change what it trusts or where it connects.

An API key (``api_key``, attested transports only) is sent on every request as
``Authorization: Bearer KEY``, after the connection was admitted: never with the
``GET /attestation`` that admits it, never over :class:`PlainTransport`.

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

from blindai.client._http11 import (
    DEFAULT_MAX_BODY,
    Exchange,
    Http11Connection,
    HttpResponse,
    OnOpen,
)
from blindai.client._peers import PeerAttestation, PeerGate
from blindai.client._ports import (
    PortRole,
    close_orphaned_tls_socket,
    speaks_http,
    speaks_tls,
    wrong_port,
)
from blindai.errors import (
    BindingError,
    ConfigurationError,
    NetworkError,
    ProtocolError,
    RequestTimeout,
)
from blindai.protocol.names import SERVER_NAME

__all__ = [
    "AttestedTlsTransport",
    "HttpResponse",
    "PinnedTlsTransport",
    "PlainTransport",
    "PortRole",
    "check_host",
]


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
        keep_alive: bool = True,
        api_key: str | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            # the resolver takes a larger number modulo 65536: 99240 would reach port 33704
            raise ConfigurationError(
                f"{role.flag_text} {port!r:.20} is not a TCP port number (1 to 65535)"
            )
        self.host, self.port, self.timeout = check_host(host), port, timeout
        self._auth = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        self.role = role
        self.keep_alive = keep_alive
        self.max_response_bytes = max_response_bytes
        self._local = threading.local()
        self._on_open: OnOpen | None = None
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
                on_open=self._on_open,
            )
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Callable[[], Iterable[bytes | memoryview]] | None = None,
        headers: dict[str, str] | None = None,
        body_length: int | None = None,
        *,
        max_body: int | None = None,
    ) -> HttpResponse:
        """Send one request. A streamed ``body`` is a factory of chunks with ``body_length``.
        ``max_body`` caps this response's body below ``max_response_bytes`` (an answer read
        before the server is attested: :data:`~blindai.client._http11.MAX_UNVERIFIED_BODY`).

        Without keep-alive, the request asks the server to close the connection, and the
        client closes it once answered (a load balancer then spreads requests over replicas).
        """
        if self._closed:
            raise ConfigurationError("this connection is closed: open a new one")
        headers = {**self._auth, **(headers or {})}
        if self.keep_alive:
            return self._conn().request(method, path, body, headers, body_length, max_body=max_body)
        conn = self._conn()
        try:
            headers = {**headers, "Connection": "close"}
            return conn.request(method, path, body, headers, body_length, max_body=max_body)
        finally:
            conn.close()

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
        body: bytes | Callable[[], Iterable[bytes | memoryview]] | None = None,
        headers: dict[str, str] | None = None,
        body_length: int | None = None,
        *,
        max_body: int | None = None,
    ) -> HttpResponse:
        """Send one request; a port that answers in TLS is reported as :class:`WrongPort`."""
        try:
            return super().request(method, path, body, headers, body_length, max_body=max_body)
        except RequestTimeout:
            raise
        except (NetworkError, ProtocolError) as exc:
            if speaks_tls(self.host, self.port, self.timeout):
                raise wrong_port(self.port, self.role, found="TLS") from exc
            raise


def check_host(host: str) -> str:
    """``host`` when the resolver can take it; ConfigurationError otherwise.

    The resolver encodes a name with the ``idna`` codec, which raises UnicodeError (not an
    OSError) on an empty or over-long label: ``a..b``, a label of 64 characters.
    """
    try:
        host.encode("idna")
    except UnicodeError:
        raise ConfigurationError(
            f"{host!r} is not a valid host name: a label (between dots) is empty, longer than "
            "63 characters, or not valid IDNA"
        ) from None
    return host


def _handshake(transport: _Transport, ctx: ssl.SSLContext, sock: socket.socket) -> ssl.SSLSocket:
    """TLS on ``sock``; typed errors for a certificate refused, a plain-HTTP port, a failure."""
    try:
        # a TLS EOF without close_notify is an error, not a silent end of data
        return ctx.wrap_socket(sock, server_hostname=SERVER_NAME, suppress_ragged_eofs=False)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise BindingError(
            f"{transport.label} presented a certificate other than the attested one: "
            f"{exc.verify_message}"
        ) from exc
    except ssl.SSLError as exc:
        sock.close()
        close_orphaned_tls_socket(exc)
        if speaks_http(transport.host, transport.port, transport.timeout):
            raise wrong_port(transport.port, transport.role, found="plain HTTP") from exc
        raise NetworkError(
            f"TLS handshake with {transport.label} failed: {exc.reason or exc}"
        ) from exc
    except BaseException as exc:
        sock.close()
        close_orphaned_tls_socket(exc)
        raise


class AttestedTlsTransport(_Transport):
    """TLS whose every new connection is admitted by ``gate`` before any request is sent.

    ``keep_alive=False`` asks the server to close each connection after one request (so that
    a load balancer spreads requests over replicas); each new connection is then admitted
    again, from the gate's cache when its certificate was verified before. ``api_key``: sent
    on every request once its connection is admitted.
    """

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        *,
        gate: PeerGate,
        role: PortRole = PortRole.ATTESTED,
        max_response_bytes: int = DEFAULT_MAX_BODY,
        keep_alive: bool = True,
        api_key: str | None = None,
    ) -> None:
        super().__init__(
            host,
            port,
            timeout,
            role=role,
            max_response_bytes=max_response_bytes,
            keep_alive=keep_alive,
            api_key=api_key,
        )
        self.gate = gate
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # the certificate is trusted by its evidence, checked by the gate before any request
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        self._ctx = ctx
        self._on_open = self._admit

    def _socket(self) -> socket.socket:
        return _handshake(self, self._ctx, super()._socket())

    def _admit(self, sock: socket.socket, exchange: Exchange) -> None:
        cert = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        if not cert:
            raise BindingError(f"{self.label} presented no certificate")
        self._local.peer = self.gate.admit(cert, exchange, self.label)

    def open(self) -> PeerAttestation:
        """Open this thread's connection now (admitting it); the attestation of its peer."""
        if self._closed:
            raise ConfigurationError("this connection is closed: open a new one")
        self._conn().open()
        peer: PeerAttestation = self._local.peer
        return peer

    @property
    def peer(self) -> PeerAttestation | None:
        """The attestation of this thread's current connection's peer, if one was opened."""
        return getattr(self._local, "peer", None)


class PinnedTlsTransport(_Transport):
    """TLS that trusts only ``cert_der`` and checks the name ``blindai-srv``.

    ``role``: the attested (inference) port or the management port, for error messages.
    ``api_key``: sent on every request.
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
        keep_alive: bool = True,
        api_key: str | None = None,
    ) -> None:
        super().__init__(
            host,
            port,
            timeout,
            role=role,
            max_response_bytes=max_response_bytes,
            keep_alive=keep_alive,
            api_key=api_key,
        )
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
        return _handshake(self, self._ctx, super()._socket())
