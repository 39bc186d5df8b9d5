"""The server's listening sockets: no Nagle delay on replies (TCP_NODELAY, inherited), each
listening once bound."""

from __future__ import annotations

import socket

from blindai.server.main import _bind, http_listeners
from blindai.server.settings import ServerSettings


def test_accepted_connections_send_small_replies_without_nagle_delay() -> None:
    """Tiny keep-alive replies would otherwise wait for the peer's delayed ACK (~40 ms)."""
    listener = _bind("127.0.0.1", 0)
    try:
        listener.listen(1)
        with socket.create_connection(listener.getsockname()[:2]):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listener.close()


def test_the_plain_metrics_port_listens_on_loopback_whatever_host_says() -> None:
    settings = ServerSettings(simulation=True, host="0.0.0.0", metrics_port=9927)
    listeners = {role: (host, port) for role, host, port in http_listeners(settings)}
    assert listeners["metrics"] == ("127.0.0.1", 9927)
    assert listeners["attested"] == ("0.0.0.0", settings.attested_port)
    assert listeners["management"][0] == listeners["unattested"][0] == "0.0.0.0"
    off = http_listeners(ServerSettings(simulation=True, host="0.0.0.0"))
    assert [role for role, _, _ in off] == ["unattested", "attested", "management"]


def test_every_port_listens_as_soon_as_it_is_bound():
    """A client that found one port up is queued on the others, not refused (restarts)."""
    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        socket.create_connection(sock.getsockname(), timeout=5).close()  # queued, not refused
    finally:
        sock.close()
