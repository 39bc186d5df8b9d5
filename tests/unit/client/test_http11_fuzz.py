"""Property: whatever bytes a server sends, the HTTP/1.1 client returns a response or raises
ProtocolError or NetworkError, and nothing else.

The bytes come from real sockets (a socket pair per example). They are random bytes, or
pieces of HTTP/1.1 responses (status lines, headers, chunk lines, bodies) and random bytes put
together, so that the search reaches deep into the parser. Each example sends two requests on
the connection, so the kept-alive and retry paths are searched too.
"""

from __future__ import annotations

import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blindai.client._http11 import Http11Connection
from blindai.errors import NetworkError, ProtocolError

STATUS_LINES = [
    b"HTTP/1.1 200 OK",
    b"HTTP/1.0 404 Not Found",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK",
    b"HTTP/1.1 204 No Content",
    b"HTTP/1.1 101 Switching Protocols",
    b"HTTP/1.1 2\xb200 OK",  # a superscript two: str.isdigit() says yes
    b"HTTP/1.1 \xd9\xa2\xd9\xa0\xd9\xa0 OK",  # Arabic-Indic digits, in UTF-8
    b"HTTP/1.1 20 OK",
    b"HTTP/2 200",
    b"\x15\x03\x03\x00\x02\x02\x46",  # a TLS alert
]
HEADER_LINES = [
    b"Content-Length: 5",
    b"Content-Length: 0",
    b"Content-Length: \xb2",
    b"Content-Length: " + b"9" * 30,
    b"Content-Length: " + b"9" * 5000,
    b"Content-Length: -1",
    b"Content-Length: +5",
    b"Transfer-Encoding: chunked",
    b"Connection: close",
    b"X-A: b",
    b" folded",
    b"no colon",
]
BODY_PIECES = [
    b"hello",
    b"5\r\nhello\r\n",
    b"5;ext=1\r\nhello\r\n",
    b"0\r\n\r\n",
    b"0\r\nTrailer: x\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b"fff\r\n",
    b"0x5\r\n",
    b"\xb2\r\n",
    b"1_0\r\n",
    b"\r\n",
]


def _mostly(pieces: list[bytes]) -> st.SearchStrategy[bytes]:
    """One of ``pieces`` three times in four, else a few random bytes."""
    known = st.sampled_from(pieces)
    return st.one_of(known, known, known, st.binary(max_size=24))


@st.composite
def http_like(draw: st.DrawFn) -> bytes:
    """A status line, header lines, the blank line and body pieces, each often malformed."""
    status = draw(_mostly(STATUS_LINES))
    headers = draw(st.lists(_mostly(HEADER_LINES), max_size=5))
    body = draw(st.lists(_mostly(BODY_PIECES), max_size=6))
    return b"\r\n".join([status, *headers]) + b"\r\n\r\n" + b"".join(body)


responses = st.one_of(
    st.binary(max_size=512),
    http_like(),
    st.tuples(http_like(), http_like()).map(b"".join),
)


def _pair(data: bytes) -> tuple[socket.socket, socket.socket]:
    """The client's socket, and the server's end that has sent ``data`` and stopped writing."""
    client, server = socket.socketpair()
    client.settimeout(10)
    server.sendall(data)
    server.shutdown(socket.SHUT_WR)
    return client, server


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(first=responses, second=responses)
def test_any_bytes_give_a_response_or_a_typed_error(first: bytes, second: bytes) -> None:
    sockets = [_pair(first), _pair(second), _pair(b"")]
    handed = iter(client for client, _ in sockets)

    def connect() -> socket.socket:
        return next(handed)

    conn = Http11Connection(connect, "fuzz", max_body=4096)
    try:
        for _ in range(2):
            try:
                response = conn.request("POST", "/run", b"body", {})
            except (ProtocolError, NetworkError):
                continue
            assert 100 <= response.status <= 999
            assert len(response.body) <= 4096
    finally:
        conn.close()
        for client, server in sockets:
            client.close()
            server.close()
