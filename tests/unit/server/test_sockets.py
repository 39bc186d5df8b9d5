"""The server's listening sockets: no Nagle delay on replies (TCP_NODELAY, inherited)."""

from __future__ import annotations

import socket

from blindai.server.main import _bind


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
