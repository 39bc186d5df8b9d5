"""A small, strict HTTP/1.1 client connection: keep-alive, Content-Length or chunked bodies.

Why not ``http.client`` or ``h11``: on this path each added 100-140 microseconds a request
(header parsing through ``email``, event objects), more than the whole server round trip. This
reads exactly what a well-formed HTTP/1.1 server sends, and refuses anything else with a
:class:`ProtocolError`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from blindai.errors import ProtocolError

__all__ = ["Http11Connection", "HttpResponse"]

MAX_HEAD = 64 << 10
_RECV = 1 << 16


@dataclass(frozen=True)
class HttpResponse:
    """Status, headers (lower-case names) and body of one response."""

    status: int
    headers: dict[str, str]
    body: bytes


class _Closed(Exception):
    """The peer closed the connection before a whole response arrived."""

    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.received = received


class Http11Connection:
    """One keep-alive connection, opened lazily by ``connect`` and reopened when needed."""

    def __init__(self, connect: Callable[[], socket.socket], host_header: str) -> None:
        self._connect = connect
        self._host = host_header
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def close(self) -> None:
        """Close the socket (a later request opens a new one)."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buf.clear()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Callable[[], Iterable[bytes]] | None,
        headers: dict[str, str],
        body_length: int | None = None,
    ) -> HttpResponse:
        """Send a request and read the response; retries once on a stale kept-alive socket."""
        for attempt in (0, 1):
            reused = self._sock is not None
            if self._sock is None:
                self._sock = self._connect()
            try:
                self._send(method, path, body, headers, body_length)
                return self._read(method)
            except (_Closed, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                nothing_back = not isinstance(exc, _Closed) or exc.received == 0
                if attempt or not reused or not nothing_back:
                    raise ProtocolError("the server closed the connection mid-response") from exc
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | Callable[[], Iterable[bytes]] | None,
        headers: dict[str, str],
        body_length: int | None,
    ) -> None:
        assert self._sock is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}"]
        if isinstance(body, bytes):
            lines.append(f"Content-Length: {len(body)}")
        elif body is not None:
            if body_length is None:
                raise ValueError("a streamed body needs body_length")
            lines.append(f"Content-Length: {body_length}")
        elif method in ("POST", "PUT"):
            lines.append("Content-Length: 0")
        lines.extend(f"{k}: {v}" for k, v in headers.items())
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if isinstance(body, bytes) and len(body) <= _RECV:
            self._sock.sendall(head + body)
            return
        self._sock.sendall(head)
        if isinstance(body, bytes):
            self._sock.sendall(body)
        elif body is not None:
            for chunk in body():
                self._sock.sendall(chunk)

    def _fill(self, received: int) -> None:
        assert self._sock is not None
        data = self._sock.recv(_RECV)
        if not data:
            raise _Closed(received)
        self._buf += data

    def _read(self, method: str) -> HttpResponse:
        received = 0
        while True:
            end = self._buf.find(b"\r\n\r\n")
            while end < 0:
                if len(self._buf) > MAX_HEAD:
                    raise ProtocolError("response headers are too large")
                self._fill(received + len(self._buf))
                end = self._buf.find(b"\r\n\r\n")
            head = bytes(self._buf[:end])
            del self._buf[: end + 4]
            received += end + 4
            status, headers = _parse_head(head)
            if status >= 200 or status == 101:
                break
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked(received)
        elif "content-length" in headers:
            body = self._read_exact(_length(headers["content-length"]), received)
        else:
            body = self._read_to_close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return HttpResponse(status, headers, body)

    def _read_exact(self, n: int, received: int) -> bytes:
        while len(self._buf) < n:
            self._fill(received + len(self._buf))
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _read_line(self, received: int) -> bytes:
        end = self._buf.find(b"\r\n")
        while end < 0:
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError("malformed chunked body")
            self._fill(received + len(self._buf))
            end = self._buf.find(b"\r\n")
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def _read_chunked(self, received: int) -> bytes:
        parts: list[bytes] = []
        while True:
            size_text = self._read_line(received).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError("malformed chunk size") from None
            if size == 0:
                while self._read_line(received):  # trailers
                    pass
                return b"".join(parts)
            parts.append(self._read_exact(size, received))
            if self._read_line(received):
                raise ProtocolError("malformed chunk terminator")

    def _read_to_close(self) -> bytes:
        assert self._sock is not None
        while True:
            data = self._sock.recv(_RECV)
            if not data:
                break
            self._buf += data
        out = bytes(self._buf)
        self.close()
        return out


def _length(text: str) -> int:
    if not text.strip().isdigit():
        raise ProtocolError(f"invalid Content-Length {text!r}")
    return int(text)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"malformed status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError("malformed response header")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(parts[1]), headers
