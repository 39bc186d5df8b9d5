"""HTTP connections under limits: header size and count, read timeouts, a connection cap.

uvicorn's httptools protocol has no header size limit (its ``h11_max_incomplete_event_size``
applies to the h11 parser only), no header or body read timeout, and ``limit_concurrency``
answers 503 only after a connection is accepted, set up and its request parsed. Switching to
h11 would bound headers but costs about 120 µs more server CPU per request (300 against 180 µs
measured on the /run of a tiny model), so the httptools protocol is kept and extended here:

- **Header size and count.** The request line and headers together may take at most
  ``max_header_bytes`` and hold at most ``max_header_count`` fields: beyond, the request gets
  431 and the connection is closed. Bytes are counted as they arrive, so an endless header is
  cut at the read that takes it past the limit. A head refused so, or unparsable (400), reached
  no route: the server's ``unread`` hook is told its status (the audit log's ``unread`` lines).
- **Read timeouts (slowloris).** A request's headers must arrive within ``header_timeout_s`` of
  its first byte (of the connection, for the first request; TLS handshakes have the same
  bound); its body within ``body_timeout_s`` plus one second per ``body_min_rate`` bytes
  received. Time during which the server itself has paused reading does not count.
- **A body answered early** (a 413 from its declared length, a 404, a route that takes no
  body) is read and dropped, so that a client sending it whole can read the answer, only when
  at most ``DRAIN_BYTES`` (64 KiB) of it remain as the answer starts; otherwise the answer
  says ``Connection: close`` and the connection is dropped once it is written. It was read
  up to ``max_body_bytes`` (about 1 GiB), and before that up to the length declared.
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

``LimitedServer`` is a uvicorn server that applies them (TLS optional): it accepts each connection
itself (the cap: ``_connection_tracker``), then hands it to ``LimitedHttpProtocol``
(``_limited_http``: the read and write limits), whose transport is wrapped in ``HeadWaits``
(``_head_waits``: a small response leaves whole, answers not taken are counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import ssl
from collections.abc import Iterator

import uvicorn

from blindai.errors import ConfigurationError
from blindai.server._connection_limits import BUDGET_KEY, AnswerBudget, ConnectionLimits
from blindai.server._connection_tracker import ConnectionTracker
from blindai.server._limited_http import MAX_PIPELINED, LimitedHttpProtocol, Unread

__all__ = [
    "BUDGET_KEY",
    "FD_RESERVE",
    "MAX_PIPELINED",
    "AnswerBudget",
    "ConnectionLimits",
    "ConnectionTracker",
    "LimitedHttpProtocol",
    "LimitedServer",
    "Unread",
    "reserve_file_descriptors",
]

_log = logging.getLogger("blindai.server")

FD_RESERVE = 256
"""File descriptors kept for the server's own use beyond its connections (listening sockets,
compile children's pipes, evidence devices, logs)."""


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
        unread: Unread | None = None,
    ) -> None:
        config.timeout_keep_alive = limits.keep_alive_timeout_s
        super().__init__(config)
        self.limits = limits
        self.tls = tls
        self.budget = budget
        """Where large answers not yet taken are counted (the body budget; None: nowhere)."""
        self.unread = unread
        """Told of each request head the connections refused unread (the audit log's
        ``unread`` lines on the ports that keep one; None: nobody)."""
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
            unread=self.unread,
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
