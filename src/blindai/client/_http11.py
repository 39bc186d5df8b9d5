"""A small, strict HTTP/1.1 client connection: keep-alive, Content-Length or chunked bodies.

Why not ``http.client`` or ``h11``: on this path each added 100-140 microseconds a request
(header parsing through ``email``, event objects), more than the whole server round trip;
``make bench`` measures the difference against ``h11`` in the same run. This reads exactly
what a well-formed HTTP/1.1 server sends and refuses anything else.

Whatever the server sends, a request ends in a :class:`HttpResponse`, a
:class:`~blindai.errors.ProtocolError` (the bytes are not an acceptable HTTP/1.1 response) or
a :class:`~blindai.errors.NetworkError` (the socket failed; :class:`RequestTimeout` when it
timed out). Whatever the server sends also ends in bounded time and memory: the whole
response (interim 1xx responses, head, body, trailers) must arrive within the socket's timeout
plus one second per :data:`MIN_RATE` bytes received, so a server dripping bytes cannot hold a
request for longer; interim responses and trailers count against :data:`MAX_HEAD` in total.
Sending is bounded the same way: the whole request must be taken by the server within the
socket's timeout plus one second per :data:`MIN_RATE` bytes of body.
Errors raised by the ``connect`` callable that are already BlindAI errors (such as
a certificate that is not the attested one) pass through unchanged.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from blindai.errors import BlindAIError, NetworkError, ProtocolError, RequestTimeout

__all__ = [
    "DEFAULT_MAX_BODY",
    "MAX_HEAD",
    "MAX_UNVERIFIED_BODY",
    "MIN_RATE",
    "Exchange",
    "Http11Connection",
    "HttpResponse",
    "OnOpen",
]

MAX_HEAD = 64 << 10
"""Largest response head (status line and headers; interim 1xx responses included), and
largest chunk-size line or trailer section."""
DEFAULT_MAX_BODY = 1 << 30
"""Default cap on one response body (1 GiB)."""
MAX_UNVERIFIED_BODY = 4 << 20
"""Cap on a response body read before the server is attested (the unattested port's answers,
``GET /attestation``): evidence, collateral and certificates take tens of KiB, and such a body
is decoded whole (cbor2 makes a 72-byte object of each 1-byte empty map)."""
MIN_RATE = 64 << 10
"""Bytes a second a response must keep up, past its first ``timeout`` seconds (64 KiB/s: the
server's ``--body-min-rate`` for requests)."""
_RECV = 1 << 16
_SEND = 1 << 16
"""Most bytes handed to one ``sendall``, so that the request's deadline is checked between."""
_PREALLOC = 64 << 20
"""Largest body buffer allocated before its bytes arrive (a Content-Length is a claim)."""
_LENGTH = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit() accepts "²"
_STATUS = re.compile(r"[0-9]{3}")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")  # int(x, 16) would accept "0x1", "+1", "1_0"


@dataclass(frozen=True)
class HttpResponse:
    """Status, headers (lower-case names) and body of one response."""

    status: int
    headers: dict[str, str]
    body: bytes | bytearray
    """A large body is the bytearray it was received into (not copied again)."""


Exchange = Callable[[str, str], HttpResponse]
"""``exchange(method, path)``: one request without a body on the socket just opened; its
response body is capped by the connection's ``max_unverified_body``."""
OnOpen = Callable[[socket.socket, Exchange], None]
"""Called once per new socket, before the request it was opened for: it may inspect the socket
(e.g. its TLS peer certificate) and make requests of its own on it with ``exchange``; what it
raises closes the socket and fails the request, which is then never sent."""


class _Closed(Exception):
    """The peer closed the connection (a clean EOF) before a whole response arrived."""


# What a kept-alive socket shows once the server has closed it: a clean EOF, a TLS EOF
# without close_notify (SSLEOFError), a TLS close_notify (SSLZeroReturnError), or a reset.
_STALE: tuple[type[BaseException], ...] = (
    _Closed,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)


class Http11Connection:
    """One keep-alive connection, opened lazily by ``connect`` and reopened when needed.

    ``label`` names the peer in error messages (e.g. ``the attested port 10.0.0.5:9924``);
    ``max_body`` caps each response body; ``on_open`` admits each new socket (see
    :data:`OnOpen`), reading bodies of at most ``max_unverified_body`` bytes: the peer is not
    admitted yet. ``min_rate``: bytes a second a request and a response must keep up, past
    the socket's timeout (:data:`MIN_RATE`).
    """

    def __init__(
        self,
        connect: Callable[[], socket.socket],
        host_header: str,
        *,
        label: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        on_open: OnOpen | None = None,
        max_unverified_body: int = MAX_UNVERIFIED_BODY,
        min_rate: int = MIN_RATE,
    ) -> None:
        self._connect = connect
        self._min_rate = min_rate
        self._on_open = on_open
        self._host = host_header
        self._label = label or host_header
        self._max_body = max_body
        self._max_unverified_body = max_unverified_body
        self._limit = (max_body, "max_response_bytes")  # this response's cap, and its name
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._received = 0
        self._timeout: float | None = None  # the socket's own timeout, as connect() set it
        self._send_deadline = 0.0  # monotonic time the current request must have been sent by
        self._deadline = 0.0  # monotonic time the current response must have arrived by, less
        # one second per min_rate bytes received
        self._budget = 0  # head bytes (interim responses, trailers) the response may still send

    def close(self) -> None:
        """Close the socket (a later request opens a new one)."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buf.clear()

    def open(self) -> None:
        """Connect (and admit the socket) now, unless a socket is open already."""
        if self._sock is not None:
            return
        try:
            self._open()
        except BlindAIError:
            self.close()
            raise
        except _STALE as exc:
            self.close()
            raise self._broken(exc) from exc
        except TimeoutError as exc:
            self.close()
            raise RequestTimeout(f"{self._label} did not answer in time ({exc})") from exc
        except OSError as exc:
            self.close()
            raise NetworkError(f"cannot reach {self._label}: {_reason(exc)}") from exc
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        self._sock = self._connect()
        self._timeout = self._sock.gettimeout()
        if self._on_open is not None:
            self._on_open(self._sock, self._exchange)
            if self._sock is None:
                raise NetworkError(f"{self._label} closed the connection after admitting it")

    def _exchange(self, method: str, path: str) -> HttpResponse:
        self._received = 0
        self._limit = (self._max_unverified_body, "what it reads before attestation")
        self._send(method, path, None, {}, None)
        return self._read(method)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Callable[[], Iterable[bytes | memoryview]] | None,
        headers: dict[str, str],
        body_length: int | None = None,
        *,
        max_body: int | None = None,
    ) -> HttpResponse:
        """Send a request and read the response (its body capped by ``max_body`` when given,
        for answers read before the server is attested, else by the connection's ``max_body``).

        A kept-alive socket that the server has closed in the meantime is retried once on a
        new connection, and only when not one byte of the response had arrived: the server
        closed it before reading the request. No other failure is retried.
        """
        if self._buf:  # bytes beyond the last response: start afresh, never read them as one
            self.close()
        for attempt in (0, 1):
            reused = self._sock is not None
            self._received = 0
            try:
                if self._sock is None:
                    self._open()
                self._limit = (
                    (self._max_body, "max_response_bytes")
                    if max_body is None
                    else (max_body, "what it reads before attestation")
                )
                try:
                    self._send(method, path, body, headers, body_length)
                except _STALE:
                    early = self._early_answer(method)
                    if early is None:
                        raise
                    return early
                return self._read(method)
            except _STALE as exc:
                self.close()
                if attempt == 0 and reused and self._received == 0:
                    continue
                raise self._broken(exc) from exc
            except TimeoutError as exc:
                self.close()
                raise RequestTimeout(f"{self._label} did not answer in time ({exc})") from exc
            except BlindAIError:
                self.close()
                raise
            except OSError as exc:
                self.close()
                raise NetworkError(f"cannot reach {self._label}: {_reason(exc)}") from exc
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _early_answer(self, method: str) -> HttpResponse | None:
        """The response a server sent before it had the whole request, then closed: a 413 for
        an upload over its limit, answered from the headers alone. The request's body could
        not all be written, but the answer may be waiting on the socket; None when none is
        (the connection is then broken, or was a stale keep-alive one)."""
        try:
            response = self._read(method)
        except (_Closed, BlindAIError, OSError):
            return None
        self.close()
        return response

    def _broken(self, exc: BaseException) -> BlindAIError:
        if self._received == 0:
            how = "closed the connection" if isinstance(exc, _Closed) else _reason(exc)
            return NetworkError(f"{self._label} did not answer: {how}")
        if isinstance(exc, _Closed):
            return ProtocolError(f"{self._label} closed the connection mid-response")
        return NetworkError(f"the connection to {self._label} broke mid-response: {_reason(exc)}")

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | Callable[[], Iterable[bytes | memoryview]] | None,
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
        length = len(body) if isinstance(body, bytes) else (body_length or 0)
        self._send_deadline = time.monotonic() + (self._timeout or 0) + length / self._min_rate
        if isinstance(body, bytes) and len(body) <= _RECV:
            self._write(head + body)
            return
        self._write(head)
        if isinstance(body, bytes):
            self._write(body)
        elif body is not None:
            for chunk in body():
                self._write(chunk)

    def _write(self, data: bytes | memoryview) -> None:
        """``sendall`` within the request's deadline: the socket's timeout plus one second per
        ``min_rate`` bytes of body, however the server takes them (each piece had the socket's
        timeout afresh: a server taking just enough to beat it held a streamed upload for
        days)."""
        assert self._sock is not None
        if self._timeout is None:
            self._sock.sendall(data)
            return
        view = memoryview(data).cast("B")
        for start in range(0, len(view), _SEND):
            self._wait_send()
            try:
                self._sock.sendall(view[start : start + _SEND])
            except TimeoutError:
                self._wait_send(slack=0.05)  # the deadline's message when that is what ran out
                raise

    def _wait_send(self, *, slack: float = 0.0) -> None:
        """Set the socket's timeout to what is left of the request's deadline, at most its own."""
        assert self._sock is not None and self._timeout is not None
        left = self._send_deadline - time.monotonic()
        if left <= slack:
            raise TimeoutError(
                f"the request was not taken within {self._timeout:g} s plus one second per "
                f"{self._min_rate >> 10} KiB"
            )
        self._sock.settimeout(min(left, self._timeout))

    def _wait(self) -> None:
        """Shorten the socket's timeout to what is left of the response's deadline."""
        assert self._sock is not None
        if self._timeout is None:
            return
        left = self._deadline + self._received / self._min_rate - time.monotonic()
        if left <= 0:
            raise TimeoutError(
                f"the response did not arrive within {self._timeout:g} s plus one second per "
                f"{self._min_rate >> 10} KiB"
            )
        if left < self._sock.gettimeout():  # type: ignore[operator]
            self._sock.settimeout(left)

    def _fill(self) -> None:
        assert self._sock is not None
        self._wait()
        try:
            data = self._sock.recv(_RECV)
        except TimeoutError:
            self._wait()  # the deadline's own message when that is what ran out
            raise
        if not data:
            raise _Closed
        self._received += len(data)
        self._buf += data

    def _read(self, method: str) -> HttpResponse:
        assert self._sock is not None
        if self._timeout is not None:
            self._deadline = time.monotonic() + self._timeout
            self._sock.settimeout(self._timeout)
        self._budget = MAX_HEAD
        while True:
            end = self._buf.find(b"\r\n\r\n")
            while end < 0:
                if len(self._buf) > self._budget:
                    raise ProtocolError("response headers are too large")
                self._fill()
                end = self._buf.find(b"\r\n\r\n")
            if end > self._budget:
                raise ProtocolError(
                    "response headers are too large"
                    + (" (interim 1xx responses included)" if self._budget < MAX_HEAD else "")
                )
            self._budget -= end + 4
            head = bytes(self._buf[:end])
            del self._buf[: end + 4]
            status, headers = _parse_head(head)
            if status >= 200 or status == 101:
                break
        body: bytes | bytearray
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked()
        elif "content-length" in headers:
            body = self._read_exact(self._check_size(_length(headers["content-length"])))
        else:
            body = self._read_to_close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return HttpResponse(status, headers, body)

    def _check_size(self, size: int) -> int:
        limit, name = self._limit
        if size > limit:
            raise ProtocolError(
                f"the response body ({size} bytes or more) is over the client's limit of "
                f"{limit} bytes ({name})"
            )
        return size

    def _read_exact(self, n: int) -> bytes | bytearray:
        if n > _RECV and len(self._buf) < n:
            return self._read_into(n)
        while len(self._buf) < n:
            self._fill()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _read_into(self, n: int) -> bytearray:
        """A large body received straight into its own buffer (no slicing). Up to
        :data:`_PREALLOC` bytes it is allocated at once; past that it doubles as the bytes
        arrive, so a declared length costs memory only once the server has sent about half."""
        assert self._sock is not None
        out = bytearray(min(n, max(_PREALLOC, len(self._buf))))
        view = memoryview(out)
        filled = len(self._buf)
        view[:filled] = self._buf
        self._buf.clear()
        while filled < n:
            if filled == len(out):
                view.release()
                out += bytes(min(len(out), n - len(out)))
                view = memoryview(out)
            self._wait()
            try:
                got = self._sock.recv_into(view[filled:], min(len(out) - filled, 1 << 20))
            except TimeoutError:
                self._wait()
                raise
            if not got:
                raise _Closed
            self._received += got
            filled += got
        view.release()
        return out

    def _read_line(self) -> bytes:
        end = self._buf.find(b"\r\n")
        while end < 0:
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError("malformed chunked body: a line is too long")
            self._fill()
            end = self._buf.find(b"\r\n")
        if end > MAX_HEAD:
            raise ProtocolError("malformed chunked body: a line is too long")
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def _read_chunked(self) -> bytearray:
        # one buffer, not a list of chunks: a body of 1-byte chunks must not cost an object each
        body = bytearray()
        framing = 0  # size lines and terminators: at most MAX_HEAD plus 8 bytes a body byte, so
        # that chunk extensions cannot make a body of a few bytes endless
        while True:
            line = self._read_line()
            framing += len(line) + 4
            if framing > MAX_HEAD + 8 * len(body):
                raise ProtocolError("malformed chunked body: its framing outweighs its data")
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise ProtocolError("malformed chunk size")
            size = int(size_text, 16)
            if size == 0:
                self._budget = MAX_HEAD
                while line := self._read_line():  # trailers: MAX_HEAD bytes in all
                    self._budget -= len(line) + 2
                    if self._budget < 0:
                        raise ProtocolError("malformed chunked body: the trailers are too large")
                return body
            self._check_size(len(body) + size)
            body += self._read_exact(size)
            if self._read_line():
                raise ProtocolError("malformed chunk terminator")

    def _read_to_close(self) -> bytes:
        while True:
            self._check_size(len(self._buf))
            try:
                self._fill()
            except _Closed:
                break
        out = bytes(self._buf)
        self.close()
        return out


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"TLS error {exc.reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _length(text: str) -> int:
    value = text.strip(" \t")
    if not _LENGTH.fullmatch(value):
        raise ProtocolError(f"invalid Content-Length {text[:40]!r}")
    return int(value)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if (
        len(parts) < 2
        or parts[0] not in ("HTTP/1.1", "HTTP/1.0")
        or not _STATUS.fullmatch(parts[1])
    ):
        raise ProtocolError(f"malformed status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError("malformed response header")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(parts[1]), headers
