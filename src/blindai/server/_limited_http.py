"""uvicorn's httptools protocol under the limits of ``connections`` (its module docstring says
which, and why): header size and count, read and write timeouts, pipelining, chunked framing,
answers not yet taken counted in the body budget, and hanging up without reading further."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from blindai.errors import ServerBusy
from blindai.protocol.names import ERROR_HEADER
from blindai.server._connection_limits import (
    ANSWERED_KEY,
    BUDGET_KEY,
    AnswerBudget,
    ConnectionLimits,
)
from blindai.server._connection_tracker import ConnectionTracker
from blindai.server._head_waits import HeadWaits

__all__ = ["DRAIN_BYTES", "MAX_PIPELINED", "LimitedHttpProtocol", "Unread"]

_ABORT_AFTER_S = 0.5
_CUT = "the server stopped before answering this request; send it again"
MAX_PIPELINED = 32
"""Requests read ahead on one connection while an earlier one is being answered."""
_FRAMING_BYTES = 64 << 10
_FRAMING_PER_BYTE = 8
"""A body's chunked framing (size lines, extensions, terminators) may take this many bytes,
plus this many per byte of body data."""

DRAIN_BYTES = 64 << 10
"""The most of a request's body still read, and dropped, once the request has been answered
(a 413 from its declared length, a route that takes no body): more remaining, the answer says
``Connection: close`` and the connection is dropped once it is written."""

_ANSWER_CHECK_S = 0.02
"""How often a connection holding a large answer checks whether its client has taken it."""


Unread = Callable[[int, float], None]
"""``unread(status, seconds)``: told of each request the connection answered itself before
reading its head whole (431: request line or headers over the limits; 400: not HTTP), with the
seconds since the head's first byte; no route, so no access check or audit line, saw it."""


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request over a limit."""


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


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header limits and read timeouts."""

    def __init__(
        self,
        *args: Any,
        limits: ConnectionLimits,
        tracker: ConnectionTracker,
        key: object,
        budget: AnswerBudget | None = None,
        unread: Unread | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._unread = unread
        self._head_start = self.loop.time()
        """When the head being read began (its first byte, at the latest)."""
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
        self._codings: list[bytes] = []  # the head's transfer codings, in order
        self._unsupported: str | None = None  # why the head is answered 501
        self._hung_up = False
        self._read_ahead_full = False  # MAX_PIPELINED requests wait: the parser stopped
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._body_start = 0.0
        self._body_bytes = 0
        self._body_received = 0  # bytes read since the headers: data and chunked framing
        self._body_data = 0  # of which body data
        self._drained = 0  # bytes read after the request was answered
        self.last_active = self.loop.time()
        self.ws_protocol_class = None  # no WebSocket here: an upgrade request is plain HTTP

    # connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header timer for the first request."""
        large = None if self._budget is None else self._answer_written
        self._out = HeadWaits(transport, self.loop, self._arm_write_timer, large)
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
        terminated as for a client gone), and the connection is dropped. The request's scope
        records the 503 (``ANSWERED_KEY``, :meth:`hang_up`) for the logs and metrics."""
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

        An ``answer`` sent while the request in progress has none yet is that request's answer
        (its client reads it first): its status goes in the request's scope
        (``ANSWERED_KEY``), for the audit log, the access log and the metrics, instead of what
        the app answers afterwards to nobody (the 499 of a body it no longer gets). So for the
        503 of :meth:`cut` and a 400 for a body's broken framing.
        """
        if self._hung_up or self.transport.is_closing():
            return
        self._hung_up = True
        self._cancel_timers()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # the request in progress is over: as for a lost connection, its app gets
            # http.disconnect and writes nothing more (it answered after a 400 otherwise)
            if answer and not cycle.response_started:
                cast(dict[str, Any], cycle.scope)[ANSWERED_KEY] = int(answer.split(b" ", 2)[1])
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
            if not self._raw_header_bytes:
                self._head_start = self.last_active
            self._raw_header_bytes += len(data)
        else:
            self._body_bytes += len(data)
            self._body_received += len(data)
            if self._answered_early():
                self._drained += len(data)
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
            if self._unsupported is not None:
                self._told_unread(501)
                self.hang_up(_closing_reply(b"501 Not Implemented", self._unsupported))
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
        elif self._answered_early() and (
            self._drained > DRAIN_BYTES or self._body_received > self._limits.max_body_bytes
        ):
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
        """Answer an unparsable request with 400 and hang up (a head not read: ``unread``)."""
        self._told_unread(400)
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
        if name.lower() == b"transfer-encoding":
            self._codings += [c.strip().lower() for c in value.split(b",")]
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """End of the header phase: the body's time counts from here (its timer starts after
        the read, if the body is not complete by then)."""
        if len(self.pipeline) >= MAX_PIPELINED:
            # each waiting request holds its scope and cycle (about 2.5 KB, from some 30
            # bytes of request): 1 MiB of pipelined requests took 85 MB of the server
            self._read_ahead_full = True
            raise _Refused("too many pipelined requests")
        codings, self._codings = self._codings, []
        if codings and codings != [b"chunked"]:
            # httptools frames "gzip, chunked" as chunked and leaves the gzip undone: the body
            # would be read as it came. Only chunked is implemented (RFC 9112: 501).
            shown = b", ".join(codings).decode("latin-1")[:100]
            self._unsupported = f"Transfer-Encoding {shown!r} is not supported; only chunked"
            raise _Refused(self._unsupported)
        self._in_headers = False
        self._raw_header_bytes = 0
        self._header_size = self._header_count = 0
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._body_start = self.loop.time()
        self._body_bytes = self._body_received = self._body_data = self._drained = 0
        super().on_headers_complete()
        self._close_if_unread(self.cycle)

    def on_body(self, body: bytes) -> None:
        """Count body data (what is not is chunked framing)."""
        self._body_data += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The body is complete: the next bytes are the next request's headers."""
        self._in_headers = True
        self._head_start = self.loop.time()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # limits

    def _close_if_unread(self, cycle: Any) -> None:
        """Make ``cycle``'s answer close the connection when, as it starts, more than
        ``DRAIN_BYTES`` of the request's body remain unread (its route took no body, or
        refused it): ``Connection: close``, and the connection dropped once the answer is
        written, reading no further. A body the route reads is not affected: it is read
        before the answer starts. Before, such a body was read and dropped up to the largest
        body a port takes (about 1 GiB): a ``GET /`` declaring 100 MB was read whole."""
        send = cycle.send
        closing = False

        async def send_closing(message: dict[str, Any]) -> None:
            nonlocal closing
            if message["type"] == "http.response.start" and self._unread_beyond(cycle):
                closing = True
                headers = list(message.get("headers", []))
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            elif closing and not message.get("more_body", False):
                cycle.keep_alive = True  # not uvicorn's close: a TLS close reads on
                await send(message)
                self.hang_up()
                return
            await send(message)

        cycle.send = send_closing

    def _unread_beyond(self, cycle: Any) -> bool:
        """Whether more than ``DRAIN_BYTES`` of ``cycle``'s request body have yet to come."""
        if not cycle.more_body or cycle is not self.cycle or self._in_headers:
            return False
        for name, value in cycle.scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return True
                return declared - self._body_data > DRAIN_BYTES
        return True  # chunked: any length may follow

    def _check_headers(self) -> None:
        limits = self._limits
        if self._header_count > limits.max_header_count:
            self._refusal = f"more than {limits.max_header_count} request headers"
        elif self._header_size > limits.max_header_bytes:
            self._refusal = f"request headers over {limits.max_header_bytes} bytes"
        if self._refusal is not None:
            raise _Refused(self._refusal)

    def _refuse(self, reason: str) -> None:
        self._told_unread(431)
        self.hang_up(_closing_reply(b"431 Request Header Fields Too Large", reason))

    def _told_unread(self, status: int) -> None:
        """Tell ``unread`` of a head answered ``status`` before it was read whole (a body's
        framing refused is not one: its request was read, and its route records it)."""
        if self._unread is not None and self._in_headers and not self._hung_up:
            self._unread(status, self.loop.time() - self._head_start)

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
