"""A real loopback TCP or TLS server whose every connection runs a function written by the test.

It plays servers that misbehave on purpose: a close between two kept-alive requests, a reset
mid-response, chunked or unterminated bodies. ``connections`` counts the accepted connections,
so a test sees whether the client retried.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from blindai.server.tls import TlsIdentity

Handler = Callable[[int, socket.socket], None]


def read_request(sock: socket.socket) -> bytes:
    """One request (head and Content-Length body); b"" when the client closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def ok(body: bytes = b"hello") -> bytes:
    """A 200 response with a Content-Length body."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass
class ScriptedServer:
    """Where it listens, its TLS certificate (when TLS), and what it saw."""

    port: int
    cert_der: bytes | None
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    idle_closed: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def scripted_server(handler: Handler, *, tls: bool = False) -> Iterator[ScriptedServer]:
    """Run ``handler(index, socket)`` for each connection on a free loopback port.

    With ``tls``, the socket is a server-side TLS socket with a ``blindai-srv`` certificate
    (``cert_der``), as our attested ports present. The handler's socket is closed after it
    returns, unless it closed it itself.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    identity = TlsIdentity.generate() if tls else None
    ctx = identity.server_context() if identity is not None else None
    state = ScriptedServer(listener.getsockname()[1], identity.cert_der if identity else None)
    threads: list[threading.Thread] = []

    def run(index: int, raw: socket.socket) -> None:
        sock: socket.socket = raw
        try:
            if ctx is not None:
                sock = ctx.wrap_socket(raw, server_side=True)
            handler(index, sock)
        except (OSError, ssl.SSLError):
            pass  # the client went away: that is what some tests do
        finally:
            sock.close()

    def accept() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            state.connections += 1
            t = threading.Thread(target=run, args=(state.connections - 1, raw), daemon=True)
            threads.append(t)
            t.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield state
    finally:
        state.release.set()
        try:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        listener.close()
        acceptor.join(10)
        for t in threads:
            t.join(10)
