"""HTTP connections under limits: header size and count, read timeouts, a connection cap.

uvicorn's httptools protocol has no header size limit (its ``h11_max_incomplete_event_size``
applies to the h11 parser only), no header or body read timeout, and ``limit_concurrency``
answers 503 only after a connection is accepted, set up and its request parsed. Switching to
h11 would bound headers but costs about 120 µs more server CPU per request (300 against 180 µs
measured on the /run of a tiny model), so the httptools protocol is kept and extended here:

- **Header size and count.** The request line and headers together may take at most
  ``max_header_bytes`` and hold at most ``max_header_count`` fields: beyond, the request gets
  431 and the connection is closed. Bytes are counted as they arrive, so an endless header is
  cut at the read that takes it past the limit.
- **Read timeouts (slowloris).** A request's headers must arrive within ``header_timeout_s`` of
  its first byte (of the connection, for the first request; TLS handshakes have the same
  bound); its body within ``body_timeout_s`` plus one second per ``body_min_rate`` bytes
  received. Time during which the server itself has paused reading does not count.
- **A body answered early** (a 413 from its declared length, a 404) is still read and
  dropped, so that a client sending it whole can read the answer, but no further than
  ``max_body_bytes``: it was read up to the length the client declared (any length).
- **Pipelining.** At most ``MAX_PIPELINED`` requests are read ahead while an earlier one is
  answered; then parsing stops, those read are answered in order, and the connection closes.
  Every request of a read was queued at once: 1 MiB of pipelined 30-byte requests took 85 MB.
- **Chunked framing.** A chunked body's framing (size lines, extensions, trailers' bytes) may
  take 64 KiB plus 8 bytes per byte of body data; beyond, 400 and the connection is closed.
  It carries no body data, so no body limit saw it: an endless chunk extension was read for
  good, at any speed.
- **Idle keep-alive**: uvicorn's own timer (``keep_alive_timeout_s``); a connection whose
  client is still taking the last answer is not idle (that timer cut large answers short).
- **Answers must be taken (a client that stops reading).** What the server writes must be
  taken as a body must arrive: within ``body_timeout_s`` plus one second per ``body_min_rate``
  bytes taken, counted from when the client had taken all that was written before; then the
  connection is dropped. Not taken is what waits in the transport's buffer and, unsent, in
  the kernel's send queue. Once a request is complete no other timer runs, so a client that
  pipelined requests and never read the answers, or left a large answer unread, held its
  connection (and the answers in the server's memory) for good.
- **Answers not taken count against the body budget.** An answer larger than
  ``_JOINED_BYTES`` is held in the server's memory (the transport's buffers) until the client
  takes it; each such write is counted in the server's body budget (``--max-body-memory``, see
  ``body_budget``) until all that was written to the connection has been taken, or the
  connection is gone. Before, each connection could hold an answer of
  ``--max-response-bytes`` that its client never read, for as long as the rule above allows
  (some 17 minutes for 64 MiB at the defaults).
- **Hanging up stops the reading.** A refused or timed-out connection is not read any further:
  a TLS close would wait for the client's close_notify, reading and decrypting whatever it
  still sends for up to 30 s (``ssl_shutdown_timeout``), so an endless header refused with 431
  could still be sent whole. Instead the answer (if any) is written, reading pauses (what the
  client pushes fills the TLS layer's buffer, then the sockets'), and the connection is
  dropped shortly after.
- **One write per small response.** uvicorn writes a response's head and body apart: two TLS
  records in two socket writes, and a client that wakes up twice. The head waits (until the
  body's write, or the end of the event loop's turn) so that a small response leaves whole.
- **No protocol upgrades.** A request asking for one (``Upgrade: websocket``, ``h2c``, ...,
  or ``CONNECT``) is answered as a plain HTTP request, through the app and its access checks,
  and the connection closes after that answer: the parser reads nothing after such a request.
  uvicorn left a WebSocket upgrade unanswered and the connection open, and after any other
  upgrade request ignored what followed until the keep-alive timeout.
- **A cap on connections** per port, counted from the TCP accept (before any TLS handshake):
  at the cap, the connection idle for the longest is dropped, its slot freed at once, to make
  room; when none is idle the new one is refused at once (its file descriptor is freed right
  away). With none idle, the connection whose TLS handshake began first is dropped instead:
  a real handshake takes milliseconds, so only a stalled one is old enough to be the first.

``LimitedServer`` is a uvicorn server that applies them (TLS optional).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import logging
import resource
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from blindai.errors import ConfigurationError, ServerBusy
from blindai.protocol.names import ERROR_HEADER

__all__ = [
    "BUDGET_KEY",
    "FD_RESERVE",
    "MAX_PIPELINED",
    "AnswerBudget",
    "ConnectionLimits",
    "ConnectionTracker",
    "LimitedHttpProtocol",
    "LimitedServer",
    "reserve_file_descriptors",
]

_log = logging.getLogger("blindai.server")

_ABORT_AFTER_S = 0.5
_CUT = "the server stopped before answering this request; send it again"
FD_RESERVE = 256
_JOINED_BYTES = 64 << 10
MAX_PIPELINED = 32
"""Requests read ahead on one connection while an earlier one is being answered."""
_SIOCOUTQNSD = 0x894B
"""Linux: bytes of a TCP socket's send queue not yet sent (held back by the peer's receive
window). Sent bytes not yet acknowledged are not counted (SIOCOUTQ counts them): a client
that has read everything may delay its acknowledgement 40 ms, and its connection looked busy
meanwhile."""
_FRAMING_BYTES = 64 << 10
_FRAMING_PER_BYTE = 8
"""A body's chunked framing (size lines, extensions, terminators) may take this many bytes,
plus this many per byte of body data."""
"""Writes up to this size are joined with a waiting head; larger ones go as they are."""
"""File descriptors kept for the server's own use beyond its connections (listening sockets,
compile children's pipes, evidence devices, logs)."""


_ANSWER_CHECK_S = 0.02
"""How often a connection holding a large answer checks whether its client has taken it."""


BUDGET_KEY = "blindai.budget_key"
"""The scope entry naming the tenant's key a request's bytes are counted for (set by the body
budget's middleware; absent: no tenant's)."""


class AnswerBudget(Protocol):
    """What holds the bytes of answers not yet taken (the server's body budget)."""

    def hold(self, size: int, key: str | None = None) -> None:
        """Count ``size`` bytes, even beyond the budget (they are in memory already), for the
        tenant's ``key`` whose request they answer (None: no tenant's)."""

    def give(self, size: int, key: str | None = None) -> None:
        """Stop counting ``size`` bytes (for ``key``)."""


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    """Limits on the connections of one port (the server builds them from its settings)."""

    max_header_bytes: int
    """Request line and headers, in bytes."""
    max_header_count: int
    """Header fields of one request."""
    header_timeout_s: float
    """Time for a request's headers (and for a TLS handshake) to arrive."""
    body_timeout_s: float
    """Time for a request body to arrive, before the allowance for its size."""
    body_min_rate: int
    """Bytes a second a body must keep up: each ``body_min_rate`` bytes adds one second."""
    keep_alive_timeout_s: int
    """How long an idle connection stays open between requests."""
    max_connections: int
    """Open connections on one port (TLS handshakes included)."""
    max_body_bytes: int
    """The largest body a request may carry. One answered before its body was read whole (a
    413 from its declared length, a 404) still has its body read and dropped, so that a client
    sending it all can read the answer, up to this many bytes; then the connection is closed."""


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request over a limit."""


class ConnectionTracker:
    """The open connections of one port: admission at the cap, eviction of the idlest (or else
    of the one whose TLS handshake started first)."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._open: dict[object, LimitedHttpProtocol | None] = {}
        self._handshakes: dict[object, asyncio.Task[None]] = {}  # in the order they began
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, key: object) -> bool:
        """Take a slot for a new connection; False when none can be freed."""
        if len(self._open) >= self.max_connections and not self._evict_one():
            self.refused += 1
            return False
        self._open[key] = None
        return True

    def handshake(self, key: object, task: asyncio.Task[None]) -> None:
        """The task setting the connection up (its TLS handshake), until ``attach``."""
        if key in self._open:
            self._handshakes[key] = task

    def attach(self, key: object, protocol: LimitedHttpProtocol) -> None:
        """The connection's HTTP protocol, once TLS (if any) is set up."""
        self._handshakes.pop(key, None)
        if key in self._open:
            self._open[key] = protocol

    def release(self, key: object) -> None:
        """Free the connection's slot (idempotent)."""
        self._open.pop(key, None)
        self._handshakes.pop(key, None)

    def _evict_one(self) -> bool:
        """Make room: drop the connection idle the longest or, with none idle, the one whose
        TLS handshake began first. Handshakes could not be dropped: a client opening
        ``max_connections`` TCP connections and sending nothing, again every
        ``header_timeout_s``, had every other client refused for good. A real handshake takes
        milliseconds: to drop one, that many newer ones must have begun in the meantime."""
        idle = [p for p in self._open.values() if p is not None and p.is_idle()]
        if idle:
            min(idle, key=lambda p: p.last_active).evict()  # releases its slot
        elif self._handshakes:
            key, task = next(iter(self._handshakes.items()))
            task.cancel()  # its socket is closed as the task ends
            self.release(key)
        else:
            return False
        self.evicted += 1
        return True


def _closing_reply(status: bytes, text: str, error: str = "") -> bytes:
    """A whole HTTP/1.1 response with a plain-text body, announcing that the connection closes
    (``error``: the class of ``blindai.errors`` it stands for, for the client)."""
    body = text.encode("utf-8")
    named = f"{ERROR_HEADER}: {error}\r\n".encode() if error else b""
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        + named
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: close\r\n\r\n"
        + body
    )


class _HeadWaits:
    """A transport whose writes of up to ``_JOINED_BYTES`` wait, joined with the next write or
    sent at the end of the event loop's turn (whichever comes first); closing sends them
    first. Everything else is the wrapped transport's.

    It also keeps the count that bounds how long a client may take to read: the bytes written
    since all that was written before had been taken (a *backlog*, which starts then), and how
    many of them the client has taken. What is not taken yet is what waits in the transport's
    buffer and in the kernel's, unsent: a TLS transport hands what it has
    encrypted to the TCP one, whose buffer it does not count, so on its own it could say that
    nothing waits while megabytes still did.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        closing: Callable[[], None],
        large: Callable[[int], None] | None = None,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._closing = closing
        self._large = large
        """Called with the size of each write larger than ``_JOINED_BYTES``."""
        self._waiting: list[bytes] = []
        sock = transport.get_extra_info("socket")
        self._fd: int | None = sock.fileno() if sock is not None else None
        self.backlog_start = loop.time()
        """When the server last wrote after the client had taken all it had written."""
        self._written = 0  # bytes handed to the transport since backlog_start

    def write(self, data: bytes) -> None:
        """Write ``data`` after what waits; a small write waits too."""
        waiting = self._waiting
        if len(data) <= _JOINED_BYTES:
            if not waiting:
                self._loop.call_soon(self.flush)
            waiting.append(data)
            if len(waiting) > 1:  # a head and its body: together, now
                self.flush()
            return
        self.flush()
        self._send(data)

    def _send(self, data: bytes) -> None:
        self._transport.write(data)  # first: counting must not delay the answer
        if len(data) <= _JOINED_BYTES and not self._transport.get_write_buffer_size():
            # a small answer the transport handed on whole (most of them): a new backlog,
            # without asking the kernel (a system call an answer). Only the clock's start
            # may come later than it should: a client that takes nothing fills the kernel's
            # buffer, then the transport's, and writes are counted again.
            self.backlog_start = self._loop.time()
            self._written = len(data)
        elif self.backlog() <= len(data):  # the client had taken all before: a new backlog
            self.backlog_start = self._loop.time()
            self._written = len(data)
        else:
            self._written += len(data)
        if self._large is not None and len(data) > _JOINED_BYTES:
            self._large(len(data))

    def backlog(self) -> int:
        """Bytes written and not yet taken by the client: in the transport's buffer and in the
        kernel's send queue, not yet sent."""
        pending = self._transport.get_write_buffer_size()
        if self._fd is not None and not self._transport.is_closing():
            queue = array.array("i", [0])
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._fd, _SIOCOUTQNSD, queue)
                pending += queue[0]
        return pending

    def taken(self) -> int:
        """Bytes of the current backlog the client has taken."""
        return self._written - self.backlog()

    def flush(self) -> None:
        """Send what waits."""
        if self._waiting:
            data = self._waiting[0] if len(self._waiting) == 1 else b"".join(self._waiting)
            self._waiting = []
            if not self._transport.is_closing():
                self._send(data)

    def close(self) -> None:
        """Send what waits, then close (once the client has taken what was written)."""
        self.flush()
        self._transport.close()
        self._closing()

    def abort(self) -> None:
        """Close at once; what waits is dropped."""
        self._waiting = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header limits and read timeouts."""

    def __init__(
        self,
        *args: Any,
        limits: ConnectionLimits,
        tracker: ConnectionTracker,
        key: object,
        budget: AnswerBudget | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._budget = budget
        self._answer_held: dict[str | None, int] = {}
        """Bytes of large answers counted in the budget, not yet taken, by the tenant's key of
        the request each answers."""
        self._answer_timer: asyncio.TimerHandle | None = None
        self._tracker = tracker
        self._key = key
        self._in_headers = True
        self._raw_header_bytes = 0  # bytes received while in the header phase
        self._header_size = 0  # parsed size: URL and fields
        self._header_count = 0
        self._refusal: str | None = None
        self._hung_up = False
        self._read_ahead_full = False  # MAX_PIPELINED requests wait: the parser stopped
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._body_start = 0.0
        self._body_bytes = 0
        self._body_received = 0  # bytes read since the headers: data and chunked framing
        self._body_data = 0  # of which body data
        self.last_active = self.loop.time()
        self.ws_protocol_class = None  # no WebSocket here: an upgrade request is plain HTTP

    # connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header timer for the first request."""
        large = None if self._budget is None else self._answer_written
        self._out = _HeadWaits(transport, self.loop, self._arm_write_timer, large)
        super().connection_made(cast(asyncio.Transport, self._out))
        self._tracker.attach(self._key, self)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Free the slot and the timers."""
        self._tracker.release(self._key)
        self._cancel_timers()
        self._answer_taken()
        super().connection_lost(exc)

    def is_idle(self) -> bool:
        """No request in progress and nothing left to send: between requests on a kept-alive
        connection, or closing and waiting for the client's close_notify (one already hung up
        is on its way out, not idle)."""
        cycle = self.cycle
        busy = cycle is not None and not cycle.response_complete
        waiting = busy or self._hung_up or self.pipeline or self._raw_header_bytes
        return not waiting and not self._out.backlog()

    def evict(self) -> None:
        """Drop an idle connection at once to make room for a new one, its slot freed now: it
        has nothing to send, and a TLS close would wait for the client's close_notify (so would
        one already closing after a ``Connection: close`` answer)."""
        self._hung_up = True
        self._cancel_timers()
        self._tracker.release(self._key)
        self._abort()

    def shutdown(self) -> None:
        """The server is stopping: an idle connection is dropped at once (a TLS close would
        wait up to 30 s for the client's close_notify); one with a request in progress closes
        after its answer."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.hang_up()
        else:
            cycle.keep_alive = False

    def cut(self) -> None:
        """The server stops now: a request not yet answered gets 503 (its run, if any, is
        terminated as for a client gone), and the connection is dropped."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self.hang_up(_closing_reply(b"503 Service Unavailable", _CUT, ServerBusy.__name__))
        else:
            self.hang_up()

    def timeout_keep_alive_handler(self) -> None:
        """An idle keep-alive connection timed out: hang up without reading any further. One
        whose client is still taking the last reply is not idle: that is bounded as a reply
        (``_write_check``), and the keep-alive time starts again."""
        self.timeout_keep_alive_task = None
        if self._out.backlog():
            self._arm_write_timer()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
            return
        self.hang_up()

    def pause_writing(self) -> None:
        """The client does not take what is written as fast: it has a time bound from now."""
        super().pause_writing()
        self._arm_write_timer()

    def hang_up(self, answer: bytes = b"") -> None:
        """Send ``answer`` (if any) and drop the connection, reading nothing more from it.

        A plain TCP close stops reading at once and closes once the answer is sent. A TLS
        close would keep reading until the client's close_notify (see the module docstring),
        so a TLS connection instead pauses its reading and is aborted ``_ABORT_AFTER_S``
        later, time for the answer to leave.
        """
        if self._hung_up or self.transport.is_closing():
            return
        self._hung_up = True
        self._cancel_timers()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # the request in progress is over: as for a lost connection, its app gets
            # http.disconnect and writes nothing more (it answered after a 400 otherwise)
            cycle.disconnected = True
            cycle.message_event.set()
        if answer:
            self.transport.write(answer)
        if self.transport.get_extra_info("ssl_object") is None:
            self.transport.close()
        else:
            self.transport.pause_reading()
        self.loop.call_later(_ABORT_AFTER_S, self._abort)

    # reading

    def data_received(self, data: bytes) -> None:
        """Feed the parser, counting header bytes; refuse oversized headers with 431.

        The count is checked once the parser has taken the data: bytes of a request whose
        headers are still incomplete past the limit are refused then and there, while a read
        that completes the headers and carries the body's start is not counted against them.
        """
        self.last_active = self.loop.time()
        if self._hung_up or self._read_ahead_full:
            self.transport.pause_reading()  # nothing more is parsed on this connection
            return
        self._unset_keepalive_if_required()
        if self._in_headers:
            self._raw_header_bytes += len(data)
        else:
            self._body_bytes += len(data)
            self._body_received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._last_request()
            return
        except httptools.HttpParserError:
            if self._read_ahead_full:  # the requests read so far are answered, then it closes
                self._cancel_timers()
                self._last_request()
                return
            if self._refusal is not None:
                self._refuse(self._refusal)
                return
            self.send_400_response("Invalid HTTP request received.")
            return
        if self._hung_up:
            return
        # the timers start only for a request still incomplete after this read: one that
        # came whole (most small requests) costs no timer
        if self._in_headers:
            if self._raw_header_bytes > self._limits.max_header_bytes:
                self._refuse(f"request headers over {self._limits.max_header_bytes} bytes")
            elif self._raw_header_bytes:
                self._arm_header_timer()
        elif self._answered_early() and self._body_received > self._limits.max_body_bytes:
            self.hang_up()
        elif self._body_received - self._body_data > _FRAMING_BYTES + (
            _FRAMING_PER_BYTE * self._body_data
        ):
            self.hang_up(
                _closing_reply(
                    b"400 Bad Request",
                    f"chunked framing (chunk sizes, extensions) over {_FRAMING_BYTES} bytes "
                    f"plus {_FRAMING_PER_BYTE} per byte of body",
                )
            )
        elif self._body_timer is None:
            self._body_timer = self.loop.call_later(self._limits.body_timeout_s, self._body_check)

    def _answered_early(self) -> bool:
        """The request whose body is arriving has been answered (no pipelined one waits)."""
        cycle = self.cycle
        return cycle is not None and cycle.response_complete and not self.pipeline

    def _last_request(self) -> None:
        """The parser stopped (at a request asking for a protocol upgrade, or with
        ``MAX_PIPELINED`` requests waiting) and reads nothing more: the requests read so far
        are answered (an upgrade as plain HTTP), then the connection closes (at once when they
        have been answered already)."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
        else:
            self.hang_up()

    def send_400_response(self, msg: str) -> None:
        """Answer an unparsable request with 400 and hang up."""
        self.hang_up(_closing_reply(b"400 Bad Request", msg))

    def on_url(self, url: bytes) -> None:
        """Count the URL against the header limit."""
        self._header_size += len(url)
        self._check_headers()
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count a header field against the limits."""
        self._header_count += 1
        self._header_size += len(name) + len(value) + 4
        self._check_headers()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """End of the header phase: the body's time counts from here (its timer starts after
        the read, if the body is not complete by then)."""
        if len(self.pipeline) >= MAX_PIPELINED:
            # each waiting request holds its scope and cycle (about 2.5 KB, from some 30
            # bytes of request): 1 MiB of pipelined requests took 85 MB of the server
            self._read_ahead_full = True
            raise _Refused("too many pipelined requests")
        self._in_headers = False
        self._raw_header_bytes = 0
        self._header_size = self._header_count = 0
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._body_start = self.loop.time()
        self._body_bytes = self._body_received = self._body_data = 0
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """Count body data (what is not is chunked framing)."""
        self._body_data += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The body is complete: the next bytes are the next request's headers."""
        self._in_headers = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # limits

    def _check_headers(self) -> None:
        limits = self._limits
        if self._header_count > limits.max_header_count:
            self._refusal = f"more than {limits.max_header_count} request headers"
        elif self._header_size > limits.max_header_bytes:
            self._refusal = f"request headers over {limits.max_header_bytes} bytes"
        if self._refusal is not None:
            raise _Refused(self._refusal)

    def _refuse(self, reason: str) -> None:
        self.hang_up(_closing_reply(b"431 Request Header Fields Too Large", reason))

    def _abort(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.abort()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self._limits.header_timeout_s, self._header_expired
            )

    def _header_expired(self) -> None:
        self._header_timer = None
        if self._in_headers:
            self.hang_up()

    def _body_check(self) -> None:
        self._body_timer = None
        if self._in_headers or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the server is not reading: not the client's fault
            self._body_start, self._body_bytes = now, 0
        allowance = self._body_bytes / max(1, self._limits.body_min_rate)
        deadline = self._body_start + self._limits.body_timeout_s + allowance
        if now >= deadline:
            self.hang_up()
            return
        self._body_timer = self.loop.call_later(deadline - now, self._body_check)

    def _arm_write_timer(self) -> None:
        if self._write_timer is None and self._out.backlog():
            self._write_timer = self.loop.call_later(self._limits.body_timeout_s, self._write_check)

    def _write_check(self) -> None:
        """Replies must be taken as bodies must arrive: within ``body_timeout_s`` plus one
        second per ``body_min_rate`` bytes, counted from when the buffer was last empty. A
        client that stops reading (a large reply, pipelined requests whose answers it never
        reads, a closing connection whose last answer it leaves unread) held its connection,
        and the memory of what the server had written to it, for good."""
        self._write_timer = None
        out = self._out
        if not out.backlog():
            return
        now = self.loop.time()
        deadline = (
            out.backlog_start
            + self._limits.body_timeout_s
            + out.taken() / max(1, self._limits.body_min_rate)
        )
        if now >= deadline:
            self._hung_up = True
            self._cancel_timers()
            self._abort()
            return
        self._write_timer = self.loop.call_later(deadline - now, self._write_check)

    def _answer_written(self, size: int) -> None:
        """A large answer's bytes wait in the transport: counted until the client takes them,
        for the tenant's key of the request it answers (``BUDGET_KEY`` in its scope)."""
        assert self._budget is not None
        cycle = self.cycle
        found = None if cycle is None else cycle.scope.get(BUDGET_KEY)
        key = found if isinstance(found, str) else None
        self._budget.hold(size, key)
        self._answer_held[key] = self._answer_held.get(key, 0) + size
        if self._answer_timer is None:
            self._answer_timer = self.loop.call_later(_ANSWER_CHECK_S, self._answer_check)

    def _answer_check(self) -> None:
        self._answer_timer = None
        if self._out.backlog():
            self._answer_timer = self.loop.call_later(_ANSWER_CHECK_S, self._answer_check)
        else:
            self._answer_taken()

    def _answer_taken(self) -> None:
        """Everything written was taken (or the connection is gone): stop counting it."""
        if self._answer_timer is not None:
            self._answer_timer.cancel()
            self._answer_timer = None
        if self._answer_held and self._budget is not None:
            for key, size in self._answer_held.items():
                self._budget.give(size, key)
            self._answer_held = {}

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = self._write_timer = None


class _Listener:
    """Accepts connections on one socket: admission at the cap, then TLS and HTTP.

    Accepting here, rather than in ``loop.create_server``, lets a connection over the cap be
    closed before anything else happens to it (no TLS handshake, no protocol), and hands an
    admitted socket to ``loop.connect_accepted_socket`` with the handshake timeout.
    """

    def __init__(self, server: LimitedServer, sock: socket.socket) -> None:
        self._server = server
        self._sock = sock
        self._tasks: set[asyncio.Task[None]] = set()
        sock.setblocking(False)
        sock.listen(server.config.backlog)
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        tracker = self._server.tracker
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as exc:  # out of file descriptors, most likely: back off a little
                _log.warning("accept failed: %s", exc.strerror)
                await asyncio.sleep(0.1)
                continue
            key = object()
            if not tracker.admit(key):
                conn.close()
                continue
            task = loop.create_task(self._start(conn, key))
            if self._server.tls is not None:
                tracker.handshake(key, task)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start(self, conn: socket.socket, key: object) -> None:
        loop = asyncio.get_running_loop()
        server = self._server
        try:
            await loop.connect_accepted_socket(
                lambda: server.http_protocol(key),
                conn,
                ssl=server.tls,
                ssl_handshake_timeout=server.limits.header_timeout_s if server.tls else None,
            )
        except asyncio.CancelledError:
            conn.close()
            server.tracker.release(key)
            raise
        except Exception:  # handshake failed, timed out, or the client left
            conn.close()
            server.tracker.release(key)

    def close(self) -> None:
        """Stop accepting; drop connections still in their TLS handshake."""
        self._accepting.cancel()
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        """Wait until the accept loop has stopped."""
        with contextlib.suppress(asyncio.CancelledError):
            await self._accepting


class LimitedServer(uvicorn.Server):
    """A uvicorn server whose connections go through the gate: cap, TLS, limited HTTP."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        limits: ConnectionLimits,
        tls: ssl.SSLContext | None,
        budget: AnswerBudget | None = None,
    ) -> None:
        config.timeout_keep_alive = limits.keep_alive_timeout_s
        super().__init__(config)
        self.limits = limits
        self.tls = tls
        self.budget = budget
        """Where large answers not yet taken are counted (the body budget; None: nowhere)."""
        self.tracker = ConnectionTracker(limits.max_connections)

    def http_protocol(self, key: object) -> LimitedHttpProtocol:
        """A new HTTP protocol for one connection."""
        return LimitedHttpProtocol(
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
            limits=self.limits,
            tracker=self.tracker,
            key=key,
            budget=self.budget,
        )

    def cut_connections(self) -> None:
        """Stop now: answer what is unanswered with 503 and drop every connection."""
        for connection in list(self.server_state.connections):
            if isinstance(connection, LimitedHttpProtocol):
                connection.cut()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Nothing: the process handles SIGTERM and SIGINT once for all its servers (each
        uvicorn server would take them in turn, and the last re-raised the signal to a
        default handler: the process died without cleaning up)."""
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Accept on the given (bound, listening) sockets."""
        await self.lifespan.startup()
        self.servers = [_Listener(self, sock) for sock in sockets or []]  # type: ignore[misc]
        self.started = True


def reserve_file_descriptors(connections: int) -> int:
    """Make room for ``connections`` open connections plus FD_RESERVE; returns the fd limit.

    Raises the soft RLIMIT_NOFILE up to the hard one if needed; ConfigurationError when even
    the hard limit is too low (lower --max-connections, or raise ``ulimit -n``).
    """
    needed = connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise ConfigurationError(
            f"{connections} connections need {needed} file descriptors, and this process may "
            f"open at most {hard}: lower --max-connections or raise the limit (ulimit -n)"
        )
    return int(soft)
