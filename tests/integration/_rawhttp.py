"""One raw HTTP/1.1 exchange over TLS pinned to the server's attested certificate.

The request goes out as the bytes given (a head the caller wrote, however malformed, and a
body), on a new connection; the reply is read with h11. What comes back: the reply, or None
when the server closed the connection without one; TimeoutError when neither came in time.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass

import h11

__all__ = ["Reply", "exchange", "head", "pinned_context"]

SERVER_NAME = "blindai-srv"


@dataclass(frozen=True)
class Reply:
    """A server's reply: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: bytes


def pinned_context(pem: str) -> ssl.SSLContext:
    """A TLS client context trusting only ``pem`` (the attested certificate)."""
    return ssl.create_default_context(cadata=pem)


def head(method: str, path: str, headers: list[tuple[str, str]]) -> bytes:
    """A request head (request line and header lines, then the blank line)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: blindai-srv", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def _parser() -> h11.Connection:
    """An h11 client that has 'sent' a request, so that it reads one reply."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
    conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x")]))
    return conn


def exchange(
    host: str, port: int, context: ssl.SSLContext, raw: bytes, *, timeout: float
) -> Reply | None:
    """Send ``raw`` on a new TLS connection and read one reply (None: closed without one)."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as plain:
        with context.wrap_socket(plain, server_hostname=SERVER_NAME) as sock:
            try:
                sock.sendall(raw)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
                pass  # the server may answer and close before taking all of it
            return _read(sock, deadline)


def _read(sock: ssl.SSLSocket, deadline: float) -> Reply | None:
    conn = _parser()
    status, headers, body = 0, {}, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete reply in time")
            sock.settimeout(left)
            try:
                data = sock.recv(1 << 16)
            except (TimeoutError, ConnectionResetError, ssl.SSLError) as exc:
                if isinstance(exc, socket.timeout):
                    raise TimeoutError("no complete reply in time") from exc
                data = b""
            if not data and status == 0:
                return None
            conn.receive_data(data)
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return Reply(status, headers, bytes(body))
