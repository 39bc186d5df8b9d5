"""A server that resets the connection before the TLS handshake leaves no socket open.

CPython's ``SSLSocket._create`` re-raises without closing its socket when the peer resets
before the handshake; the transport closes that socket itself (a server killed at the wrong
moment did this to the kill -9 tests, as a ResourceWarning at garbage collection).
"""

from __future__ import annotations

import gc
import socket
import ssl
import struct
import threading

import pytest

from blindai.client._ports import close_orphaned_tls_socket
from blindai.client._transport import PinnedTlsTransport, _Transport
from blindai.errors import NetworkError
from blindai.server.tls import TlsIdentity


class ResettingServer(threading.Thread):
    """Accepts connections and resets each one (RST, no handshake); ``reset`` is set after
    each reset (on loopback the client's socket has then received it)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.reset = threading.Event()

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            self.reset.set()


class _ResetBeforeHandshake(_Transport):
    """The plain connection is made, then reset by the server, before TLS starts on it."""

    server: ResettingServer

    def _socket(self) -> socket.socket:
        sock = super()._socket()
        assert self.server.reset.wait(10)
        self.server.reset.clear()
        return sock


class ResetTransport(PinnedTlsTransport, _ResetBeforeHandshake):
    """The real attested transport over such connections."""


def test_the_attested_transport_closes_what_a_reset_handshake_leaves():
    server = ResettingServer()
    server.start()
    transport = ResetTransport("127.0.0.1", server.port, TlsIdentity.generate().cert_der, 5)
    transport.server = server
    try:
        with pytest.raises(NetworkError):
            transport.request("GET", "/models")
    finally:
        transport.close()
        server.listener.close()
    gc.collect()  # an unclosed socket would warn here: pytest turns that into a failure


def test_the_orphan_is_found_in_the_traceback():
    """What the transport relies on, on CPython's own wrap_socket."""
    server = ResettingServer()
    server.start()
    sock = socket.create_connection(("127.0.0.1", server.port))
    assert server.reset.wait(10)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with pytest.raises(OSError) as failed:
        ctx.wrap_socket(sock, server_hostname="x")
    close_orphaned_tls_socket(failed.value)
    sock.close()
    server.listener.close()
    gc.collect()
