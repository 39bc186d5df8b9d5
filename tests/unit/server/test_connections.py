"""Connection limits on a real uvicorn server over loopback: headers, timeouts, the cap."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
import trustme
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from blindai.server._limited_http import DRAIN_BYTES
from blindai.server.connections import MAX_PIPELINED, ConnectionLimits, LimitedServer, Unread

FAST = ConnectionLimits(
    max_header_bytes=4096,
    max_header_count=20,
    header_timeout_s=0.5,
    body_timeout_s=0.5,
    body_min_rate=1000,
    keep_alive_timeout_s=1,
    max_connections=8,
    max_body_bytes=1 << 20,
)
CLOSE_WITHIN = 10.0
"""Liveness bound for 'the server closes it': far above every timeout used here."""


async def _echo(request: Request) -> Response:
    return Response(await request.body())


async def _ping(_: Request) -> Response:
    return Response(b"pong")


async def _early(_: Request) -> Response:
    """Answers without reading the body (as a 413 from a declared length does)."""
    return Response(b"too large", status_code=413)


APP = Starlette(
    routes=[
        Route("/echo", _echo, methods=["POST"]),
        Route("/early", _early, methods=["POST"]),
        Route("/ping", _ping),
    ]
)


@dataclass
class Running:
    server: LimitedServer
    port: int
    tls: ssl.SSLContext | None = None
    client_tls: ssl.SSLContext | None = field(default=None)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=CLOSE_WITHIN)
        if self.client_tls is not None:
            sock = self.client_tls.wrap_socket(sock, server_hostname="localhost")
        return sock

    def get(self, path: str = "/ping") -> int:
        cls = http.client.HTTPSConnection if self.client_tls else http.client.HTTPConnection
        kwargs = {"context": self.client_tls} if self.client_tls else {}
        conn = cls("localhost", self.port, timeout=CLOSE_WITHIN, **kwargs)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        finally:
            conn.close()


@contextmanager
def limited(
    limits: ConnectionLimits = FAST,
    *,
    tls: bool = False,
    rcvbuf: int | None = None,
    sndbuf: int | None = None,
    unread: Unread | None = None,
) -> Iterator[Running]:
    sock = socket.socket()
    if rcvbuf is not None:  # inherited by the accepted sockets (and fixes their size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server_ctx = client_ctx = None
    if tls:
        ca = trustme.CA()
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(server_ctx)
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
    config = uvicorn.Config(APP, log_config=None, access_log=False, lifespan="off")
    server = LimitedServer(config, limits=limits, tls=server_ctx, unread=unread)
    thread = threading.Thread(target=lambda: uvloop.run(server.serve(sockets=[sock])))
    thread.start()
    while not server.started:  # start-up only: not a timing assertion
        assert thread.is_alive(), "the server thread died"
        time.sleep(0.01)
    try:
        yield Running(server, sock.getsockname()[1], server_ctx, client_ctx)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


class Probe:
    """Another client, served while an attack runs: every request must answer within 1 s."""

    def __init__(self, running: Running) -> None:
        self._running = running
        self._stop = threading.Event()
        self.worst = 0.0
        self.count = 0
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._loop)

    def _loop(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                assert self._running.get() == 200
            except BaseException as exc:
                self.errors.append(exc)
                return
            self.worst = max(self.worst, time.monotonic() - start)
            self.count += 1

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self.errors, self.errors
        assert self.count > 0
        assert self.worst < 1.0, f"another client waited {self.worst:.2f} s"


def _closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (then closed here too)."""
    data = b""
    with sock:
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionResetError, ssl.SSLError):
            pass
    return data


def test_ordinary_requests_pass():
    with limited() as running:
        assert running.get() == 200
        conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=CLOSE_WITHIN)
        for _ in range(3):  # keep-alive
            conn.request("POST", "/echo", body=b"x" * 5000)
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b"x" * 5000
        conn.close()


def _read_once(sock: ssl.SSLSocket) -> bytes:
    """One TLS read: at most one record's bytes."""
    select.select([sock], [], [], CLOSE_WITHIN)
    return sock.recv(1 << 20)


@pytest.mark.parametrize("size", [5, 10_000])
def test_a_small_response_leaves_in_one_tls_record(size):
    """uvicorn writes the head and the body apart; they reach the client as one record."""
    with limited(tls=True) as running, contextlib.closing(running.connect()) as sock:
        assert isinstance(sock, ssl.SSLSocket)
        body = b"x" * size
        head = f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
        sock.sendall(head.encode() + body)
        first = _read_once(sock)
        assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"\r\n\r\n" + body)
        sock.sendall(head.encode() + body)  # the connection goes on: the next one too
        assert _read_once(sock).endswith(b"\r\n\r\n" + body)


def test_a_large_response_is_written_as_it_is():
    """A body over the joined size is not copied to join it with its head."""
    with limited(tls=True) as running, contextlib.closing(running.connect()) as sock:
        size = 300_000
        head = f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
        sock.sendall(head.encode() + b"y" * size)
        first = _read_once(sock)
        assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"\r\n\r\n")
        got = b""
        while len(got) < size:
            got += _read_once(sock)
        assert got == b"y" * size


def test_headers_over_the_size_limit_get_431():
    with limited() as running, Probe(running):
        sock = running.connect()
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        reply = _closed(sock)
        assert reply.startswith(b"HTTP/1.1 431 ")
        assert reply.endswith(b"request headers over 4096 bytes")


def test_too_many_headers_get_431():
    with limited() as running:
        sock = running.connect()
        fields = b"".join(b"X-%d: y\r\n" % i for i in range(21))
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        assert _closed(sock).endswith(b"more than 20 request headers")


def test_an_endless_header_is_cut_after_the_limit():
    """Issue 10: a 256 MB header value froze every port for 17 s and was accepted."""
    with limited() as running, Probe(running):
        sock = running.connect()
        sent = 0
        with pytest.raises(OSError):  # reset or broken pipe once the server has closed
            sock.sendall(b"GET /ping HTTP/1.1\r\nX-Big: ")
            chunk = b"a" * 65536
            while sent < 256 << 20:
                sock.sendall(chunk)
                sent += len(chunk)
        assert sent < 16 << 20  # cut early, not read whole
        sock.close()


SOCKET_BUFFER = 64 << 10
FLOOD_CAP = 64 << 20
"""Where a flood stops when the server never cuts it (the old behaviour: it read for 30 s)."""
AFTER_CUT_MAX = 2 << 20
"""What a client may still push once cut: the two socket buffers (doubled by the kernel,
SOCKET_BUFFER each), the TLS layer's read buffer (256 KiB) and one read (256 KiB), with room."""


def _tls_flood(running: Running, opening: bytes) -> tuple[bytes, int]:
    """Over TLS: send ``opening``, wait until the server answers or hangs up, then send as
    fast as the connection takes it until the server drops it. Returns the server's reply and
    the bytes the kernel took after it (capped at FLOOD_CAP).

    The TLS record layer runs on memory buffers so that one thread can both read and write;
    the client's send buffer is small and fixed, so what was taken is what the server's side
    (kernel and process) held, not what waits on the client.
    """
    assert running.client_tls is not None
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    raw.settimeout(CLOSE_WITHIN)
    raw.connect(("127.0.0.1", running.port))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = running.client_tls.wrap_bio(incoming, outgoing, server_hostname="localhost")

    def pump() -> bool:
        """Send what TLS wrote, then read one segment into TLS; False at end of stream."""
        raw.sendall(outgoing.read())
        try:
            data = raw.recv(65536)
        except ConnectionResetError:
            return False
        incoming.write(data)
        return bool(data)

    with raw:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                assert pump(), "the handshake failed"
        tls.write(opening)
        raw.sendall(outgoing.read())
        reply = b""
        while True:  # until the server says something: a reply, close_notify, a reset
            try:
                reply = tls.read(65536)
            except ssl.SSLWantReadError:
                if pump():
                    continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                pass
            break  # an empty read is the end of the stream too
        chunk = b"a" * 65536
        flooded = 0
        raw.setblocking(False)
        pending = b""
        while flooded < FLOOD_CAP:
            if not pending:
                tls.write(chunk)
                pending = outgoing.read()
            _, writable, _ = select.select([], [raw], [], CLOSE_WITHIN)
            assert writable, "the server neither read nor dropped the connection"
            try:
                taken = raw.send(pending)
            except OSError:  # reset, broken pipe: dropped
                break
            flooded += taken
            pending = pending[taken:]
    return reply, flooded


@pytest.mark.parametrize(
    ("opening", "answer"),
    [
        (b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000, b"HTTP/1.1 431 "),
        (b"GET /ping HTTP/1.1\r\n" + b"X: y\r\n" * 25, b"HTTP/1.1 431 "),
        (b"NOT HTTP\x00\r\n\r\n", b"HTTP/1.1 400 "),
        (b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: ", b""),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nx", b""),
    ],
    ids=["header-size", "header-count", "unparsable", "header-timeout", "body-timeout"],
)
def test_a_refused_connection_is_not_read_any_further(opening, answer):
    """A refusal stops the reading: after the server's answer (or its hanging up), a client
    pushing data gets only the buffers in, and then the connection is dropped. A TLS close
    instead read and dropped what came for 30 s (ssl_shutdown_timeout): an endless header
    refused with 431 could be sent whole."""
    with limited(tls=True, rcvbuf=SOCKET_BUFFER) as running:
        reply, flooded = _tls_flood(running, opening)
    assert reply.startswith(answer)
    assert flooded < AFTER_CUT_MAX, f"{flooded >> 20} MiB taken after the refusal"


@pytest.mark.parametrize("tls", [False, True])
def test_a_request_refused_with_400_gets_no_other_answer(tls):
    """A body that fails to parse after complete headers was answered 400, and then, on a TLS
    connection (which stays open half a second for the answer to leave), the app's own answer
    to the same request followed it."""
    with limited(tls=tls) as running, Probe(running):
        sock = running.connect()
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        reply = _closed(sock)
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert reply.count(b"HTTP/1.1") == 1, reply


def test_heads_refused_unread_are_told_and_nothing_else():
    """The HTTP layer's own answers to a request head it did not read whole (431, 400) reached
    no route, so the audit log never heard of them: ``unread`` is now told of each, with its
    status. A request read whole is not (its route answers and records it), even when its
    body's framing is then refused 400."""
    told: list[tuple[int, float]] = []
    heads = (
        b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n",
        b"GET /ping HTTP/1.1\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(30)) + b"\r\n",
        b"\x00\x01 not http\r\n\r\n",
        b"GET /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    with limited(unread=lambda status, seconds: told.append((status, seconds))) as running:
        answers = []
        for head in heads:
            sock = running.connect()
            sock.sendall(head)
            answers.append(_closed(sock).split(b" ", 2)[1])
    assert answers == [b"431", b"431", b"400", b"400", b"200"]
    assert [status for status, _ in told] == [431, 431, 400]
    assert all(0 <= seconds < CLOSE_WITHIN for _, seconds in told)


@pytest.mark.parametrize("tls", [False, True])
def test_a_connection_that_sends_nothing_is_closed(tls):
    with limited(tls=tls) as running, Probe(running):
        sock = socket.create_connection(("127.0.0.1", running.port), timeout=CLOSE_WITHIN)
        assert _closed(sock) == b""  # no request, no TLS handshake: closed by the server


def test_half_a_header_is_closed():
    with limited() as running, Probe(running):
        sock = running.connect()
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert _closed(sock) == b""


def test_less_body_than_promised_is_closed():
    with limited() as running, Probe(running):
        sock = running.connect()
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        assert b"200" not in _closed(sock)


def test_a_body_dripping_below_the_minimum_rate_is_closed():
    with limited() as running, Probe(running):
        sock = running.connect()
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        closed = threading.Event()

        def drip() -> None:
            try:
                while not closed.is_set():
                    sock.sendall(b"x")
                    closed.wait(0.05)  # 20 bytes/s, far below 1000
            except OSError:
                pass

        dripper = threading.Thread(target=drip)
        dripper.start()
        reply = _closed(sock)
        closed.set()
        dripper.join()
        assert b"200" not in reply


def test_an_idle_kept_alive_connection_is_closed():
    with limited() as running:
        sock = running.connect()
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _closed(sock).endswith(b"pong")


_UPGRADES = {
    "websocket": b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "h2c": b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
    "connect": b"CONNECT /ping HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("tls", [False, True])
@pytest.mark.parametrize("upgrade", sorted(_UPGRADES))
def test_an_upgrade_request_is_answered_and_then_the_connection_closes(tls, upgrade):
    """A WebSocket upgrade (which needs no key: it is refused before any route) was never
    answered, the connection held open for good; any other upgrade was answered, then what
    followed was ignored until the keep-alive timeout (60 s here, past the client's wait). Now
    the request is answered as plain HTTP (no upgrade), and the connection closes after it."""
    limits = dataclasses.replace(FAST, keep_alive_timeout_s=60)
    with limited(limits, tls=tls) as running, Probe(running):
        sock = running.connect()
        sock.sendall(_UPGRADES[upgrade] + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = _closed(sock)
    assert reply.count(b"HTTP/1.1 ") == 1, reply
    if upgrade == "connect":  # /ping takes GET only: the app's own answer
        assert reply.startswith(b"HTTP/1.1 405 "), reply
    else:
        assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"pong"), reply


def test_at_the_cap_the_idlest_connection_makes_room():
    limits = dataclasses.replace(
        FAST, max_connections=4, keep_alive_timeout_s=60, header_timeout_s=60
    )
    with limited(limits) as running:
        idle = []
        for _ in range(4):
            conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=CLOSE_WITHIN)
            conn.request("GET", "/ping")
            assert conn.getresponse().read() == b"pong"
            idle.append(conn)
        assert running.get() == 200  # a fifth client is served
        assert running.server.tracker.evicted == 1
        with pytest.raises((http.client.HTTPException, OSError)):
            idle[0].request("GET", "/ping")  # the oldest idle one was closed
            idle[0].getresponse()
        for conn in idle:
            conn.close()


@pytest.mark.parametrize("tls", [False, True])
def test_a_burst_at_the_cap_evicts_each_idle_connection_once(tls):
    """A TLS connection evicted stayed open a moment (its abort waited 0.5 s) and still
    looked idle: every connection of a burst "evicted" it again and was admitted, so 40 came
    in past a cap of 4 (file descriptors beyond the reserve) and stayed for their handshake
    timeout. A plain connection that has sent nothing yet is idle itself: the burst's evict
    one another."""
    limits = dataclasses.replace(
        FAST, max_connections=4, keep_alive_timeout_s=60, header_timeout_s=60
    )
    with limited(limits, tls=tls) as running:
        idle = []
        for _ in range(4):
            sock = running.connect()
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).endswith(b"pong")
            idle.append(sock)
        tracker = running.server.tracker
        burst = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(40)]
        deadline = time.monotonic() + CLOSE_WITHIN
        while tracker.evicted + tracker.refused < 40:  # until the server has seen them all
            assert time.monotonic() < deadline
            time.sleep(0.01)
        while len(tracker) > 4:  # the evicted ones close
            assert time.monotonic() < deadline, f"{len(tracker)} connections open, cap 4"
            time.sleep(0.01)
        if tls:  # the idle ones, then the burst's oldest handshakes, make room for the rest
            assert (tracker.evicted, tracker.refused) == (40, 0)
        for sock in idle + burst:
            sock.close()


def test_at_the_cap_with_nothing_idle_new_connections_are_refused():
    limits = dataclasses.replace(FAST, max_connections=3, header_timeout_s=1.0)
    with limited(limits) as running:
        # three connections that never finish (half a header)
        busy = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(3)]
        for sock in busy:
            sock.sendall(b"GET /ping HTTP/1.1\r\nX: ")
        while len(running.server.tracker) < 3:  # until the server has accepted them all
            time.sleep(0.01)
        refused = socket.create_connection(("127.0.0.1", running.port), timeout=CLOSE_WITHIN)
        assert _closed(refused) == b""
        assert running.server.tracker.refused >= 1
        # the stalled ones time out, and new clients are served again
        for sock in busy:
            assert _closed(sock) == b""
        while len(running.server.tracker) > 0:
            time.sleep(0.01)
        assert running.get() == 200


def test_at_the_cap_the_oldest_tls_handshake_makes_room():
    """TCP connections that never start their TLS handshake could not be dropped to make room:
    a client opening max_connections of them, and again every header timeout, had every other
    client refused for good. With nothing idle, the handshake that began first is dropped."""
    limits = dataclasses.replace(
        FAST, max_connections=3, header_timeout_s=60, keep_alive_timeout_s=60
    )
    with limited(limits, tls=True) as running:
        silent = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(3)]
        while len(running.server.tracker) < 3:  # until the server has accepted them all
            time.sleep(0.01)
        assert running.get() == 200  # served: the first silent one made room
        silent[0].settimeout(CLOSE_WITHIN)
        assert _closed(silent[0]) == b""
        flood = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(50)]
        assert running.get() == 200  # still served; the port holds at most 3 connections
        assert len(running.server.tracker) <= 3
        assert running.server.tracker.refused == 0
        for sock in silent[1:] + flood:
            sock.close()


RESERVE_SCRIPT = """
import resource
from blindai.errors import ConfigurationError
from blindai.server.connections import FD_RESERVE, reserve_file_descriptors
resource.setrlimit(resource.RLIMIT_NOFILE, (300, 600))
print(reserve_file_descriptors(40))           # already enough: kept
print(reserve_file_descriptors(300))          # raised to what is needed
try:
    reserve_file_descriptors(1000)            # over the hard limit
except ConfigurationError as exc:
    print(exc)
"""


def test_file_descriptors_are_reserved_for_the_connection_cap():
    import subprocess
    import sys

    from tests._server import REPO

    done = subprocess.run(
        [sys.executable, "-c", RESERVE_SCRIPT],
        env={"PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    kept, raised, refused = done.stdout.splitlines()
    assert (kept, raised) == ("300", "556")
    assert "1000 connections need 1256 file descriptors" in refused
    assert "--max-connections" in refused


def _stall(running: Running) -> socket.socket:
    """A client that pipelines requests with 200 KB bodies (and echoed answers) and never reads
    an answer: it sends until the server stops reading because it cannot write."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", running.port))
    sock = raw
    if running.client_tls is not None:
        sock = running.client_tls.wrap_socket(raw, server_hostname="localhost")
    sock.settimeout(1.0)  # no progress for a second: the server has stopped reading
    body = b"x" * 200_000
    request = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    with contextlib.suppress(OSError):  # a timeout, or already dropped
        for _ in range(1000):  # 200 MB: far beyond every buffer on the way
            sock.sendall(request)
    return sock


def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` (a liveness bound, CLOSE_WITHIN, not a timing assertion)."""
    deadline = time.monotonic() + CLOSE_WITHIN
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.mark.parametrize("tls", [False, True])
def test_a_client_that_never_reads_its_answers_is_dropped(tls):
    """A client that stopped reading held its connection (and the answers written to it) for
    good: every timer stops once a request is complete, so pipelined requests whose answers
    were never read kept the connection busy past every timeout, and at the cap every other
    client was refused. Answers must now be taken as bodies must arrive (body timeout, min
    rate: here 1 MB/s, past what the kernel's buffers took)."""
    limits = dataclasses.replace(FAST, body_min_rate=1 << 20)
    with limited(limits, tls=tls) as running:
        with Probe(running):
            stalled = [_stall(running) for _ in range(2)]
        _until(lambda: len(running.server.tracker) == 0, "the stalled clients are still held")
        assert running.get() == 200
        for sock in stalled:
            sock.close()


def test_a_closing_connection_whose_answer_is_never_read_is_dropped():
    """A ``Connection: close`` answer the client never reads: a plain TCP close waits until
    the buffer is sent, which was never, so the connection (and the answer) stayed for good.
    The closing connection's answer must be taken like any other."""
    limits = dataclasses.replace(FAST, body_min_rate=1 << 20)
    with limited(limits, sndbuf=4096) as running:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", running.port))
        size = 40_000  # past the sockets' buffers, under the transport's high-water mark: the
        # server's writing never pauses, and only the close is left to bound it
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % size + b"c" * size
        )
        sock.settimeout(CLOSE_WITHIN)
        assert sock.recv(1, socket.MSG_PEEK) == b"H"  # answered (peeking takes nothing)
        _until(lambda: len(running.server.tracker) == 0, "the closing connection is still held")
        sock.close()


@pytest.mark.parametrize("tls", [False, True])
def test_a_slow_reader_gets_its_whole_answer(tls):
    """A large answer still being read when the keep-alive timeout (1 s here) came was cut
    short: the connection counted as idle once the answer was written to its buffer."""
    size = 3 << 20
    with limited(tls=tls, sndbuf=SOCKET_BUFFER) as running:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)  # the answer waits
        raw.connect(("127.0.0.1", running.port))  # in the server, not in the kernel
        sock = raw
        if running.client_tls is not None:
            sock = running.client_tls.wrap_socket(raw, server_hostname="localhost")
        sock.settimeout(CLOSE_WITHIN)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        sock.sendall(b"z" * size)
        got = b""
        while not got.endswith(b"z" * 64) or len(got) < size:
            chunk = sock.recv(65536)
            assert chunk, f"cut after {len(got)} bytes"
            got += chunk
            time.sleep(0.01)  # paced: several seconds for the answer, over the 1 s keep-alive
        sock.close()
        assert got.endswith(b"\r\n\r\n" + b"z" * size)


def test_endless_chunked_framing_is_cut():
    """A chunk extension (or a chunk-size line) that never ends was read for good, at any
    speed: it carries no body data, so no body limit saw it, and it kept the body timer fed.
    Framing may now take 64 KiB plus 8 bytes per byte of body data."""
    with limited() as running, Probe(running):
        sock = running.connect()
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;e=")
        sent = 0
        with contextlib.suppress(OSError):  # reset or broken pipe once the server has closed
            while sent < 256 << 20:
                sock.sendall(b"a" * 65536)
                sent += 65536
        assert sent < 16 << 20  # cut early, not read whole
        sock.close()


def test_one_byte_chunks_are_still_a_body():
    """Framing of 5 bytes per byte of body (one-byte chunks) stays within the bound."""
    with limited() as running, contextlib.closing(running.connect()) as sock:
        count = 100_000
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1\r\nq\r\n" * count
            + b"0\r\n\r\n"
        )
        reply = b""
        while not reply.endswith(b"q" * count):
            chunk = sock.recv(65536)
            assert chunk, reply[:200]
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("tls", [False, True])
def test_pipelined_requests_are_read_ahead_up_to_a_bound(tls):
    """Every request of a read was parsed and queued at once, each holding its scope and cycle
    (about 2.5 KB, from a 30-byte request): 1 MiB of pipelined requests took 85 MB of the
    server. Now at most MAX_PIPELINED wait; those read are answered, in order, and the
    connection closes after them (the client sends the rest again, as after any close)."""
    with limited(tls=tls) as running, Probe(running), contextlib.closing(running.connect()) as sock:
        request = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
        with contextlib.suppress(OSError):  # the server may close before taking them all
            sock.sendall(request * ((1 << 20) // len(request)))
        reply = _closed(sock)
    answers = reply.count(b"HTTP/1.1 200 ")
    assert answers == reply.count(b"pong") and reply.endswith(b"pong")
    assert 1 < answers <= MAX_PIPELINED + 1, answers


def test_a_body_answered_early_is_read_no_further_than_the_largest_body():
    """A request answered before its body was read (413 from its declared length) kept the
    connection reading and dropping whatever came, up to the length it declared (10**15
    here): 512 MiB in 0.6 s went through decryption on a real server, and on. Then the body
    was read up to max_body_bytes (1 MiB here); now the connection closes after the answer
    (test_a_body_no_route_takes_is_not_read_and_the_connection_closes)."""
    with limited() as running, Probe(running):
        sock = running.connect()
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 413 ")
        sent = 0
        with contextlib.suppress(OSError):  # reset or broken pipe once the server has closed
            while sent < 256 << 20:
                sock.sendall(b"a" * 65536)
                sent += 65536
        assert sent < 16 << 20
        sock.close()


@pytest.mark.parametrize("tls", [False, True])
def test_a_body_no_route_takes_is_not_read_and_the_connection_closes(tls):
    """A GET / declaring a 100 MB body was answered 200, then the connection read and dropped
    the body, up to the largest body a port takes (about 1 GiB on a real server): bandwidth
    and a connection slot for nothing. Now the answer says ``Connection: close`` and the
    connection reads no further than DRAIN_BYTES (and the buffers on the way) once it is
    written: the client cannot send most of the body."""
    declared = 100_000_000
    real = dataclasses.replace(FAST, max_body_bytes=1 << 30)  # a real server's largest body
    with limited(real, tls=tls) as running, Probe(running):
        sock = running.connect()
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % declared)
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 ") and b"pong" in head
        assert b"\r\nconnection: close\r\n" in head.lower()
        sent = 0
        with contextlib.suppress(OSError):  # reset or broken pipe once the server has closed
            while sent < declared:
                sock.sendall(b"a" * 65536)
                sent += 65536
        sock.close()
    assert sent < 16 << 20, f"{sent >> 20} MiB read after the answer"


def test_a_body_answered_early_that_fits_is_read_and_the_connection_goes_on():
    """A client that sends the whole body before reading (as most do) still gets the answer,
    and the connection serves its next request, when the body left unread is small (at most
    DRAIN_BYTES): a larger one closes the connection after the answer."""
    with limited() as running, contextlib.closing(running.connect()) as sock:
        size = DRAIN_BYTES // 2
        head = b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
        sock.sendall(head + b"b" * size + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while not reply.endswith(b"pong"):
            chunk = sock.recv(65536)
            assert chunk, reply
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 413 ") and b"HTTP/1.1 200 " in reply
