"""The hand-written HTTP/1.1 client against real loopback servers that misbehave on purpose.

Bodies (Content-Length, chunked, read to close), the one retry on a kept-alive socket that the
server closed (every symptom: FIN, reset, TLS EOF without close_notify, TLS close_notify), no
retry once a response byte arrived, the response body cap, and strict ASCII numbers.
"""

from __future__ import annotations

import select
import socket
import threading
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from blindai.client._http11 import Http11Connection, HttpResponse
from blindai.client._transport import PinnedTlsTransport
from blindai.errors import NetworkError, ProtocolError, RequestTimeout
from tests._server import free_ports
from tests.unit.client._scripted import ScriptedServer, ok, read_request, reset, scripted_server


def plain(
    server: ScriptedServer, *, max_body: int = 1 << 20, timeout: float = 10
) -> Http11Connection:
    """A client connection to the scripted server over plain TCP."""

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", server.port), timeout)

    return Http11Connection(connect, f"127.0.0.1:{server.port}", max_body=max_body)


def get(conn: Http11Connection) -> HttpResponse:
    return conn.request("GET", "/", None, {})


def answer_each(*responses: bytes) -> Callable[[int, socket.socket], None]:
    """A handler answering successive requests on one connection with ``responses``."""

    def handler(_: int, sock: socket.socket) -> None:
        for response in responses:
            if not read_request(sock):
                return
            sock.sendall(response)

    return handler


def wait_closed_by_server(conn: Http11Connection) -> None:
    """Block until the server's close reached the client's idle socket (an event, no sleep)."""
    sock = conn._sock
    assert sock is not None
    readable, _, _ = select.select([sock], [], [], 10)
    assert readable, "the server did not close the idle connection"


# --- bodies ---------------------------------------------------------------------------------


def test_content_length_bodies_on_one_kept_alive_connection() -> None:
    with scripted_server(answer_each(ok(b"one"), ok(b"two!"))) as server:
        conn = plain(server)
        assert get(conn).body == b"one"
        resp = get(conn)
        conn.close()
    assert (resp.status, resp.body, resp.headers["content-length"]) == (200, b"two!", "4")
    assert server.connections == 1


def test_chunked_body_with_extensions_and_trailers() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n1\r\n \r\nA \r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    with scripted_server(answer_each(chunked, ok(b"after"))) as server:
        conn = plain(server)
        assert get(conn).body == b"hello 0123456789"
        assert get(conn).body == b"after"  # the chunked body was consumed exactly
        conn.close()
    assert server.connections == 1


def test_body_read_to_close_then_a_new_connection() -> None:
    def handler(_: int, sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")

    with scripted_server(handler) as server:
        conn = plain(server)
        assert get(conn).body == b"until the end"
        assert get(conn).body == b"until the end"
    assert server.connections == 2


def test_bytes_beyond_a_response_are_never_read_as_the_next_one() -> None:
    with scripted_server(answer_each(ok(b"one") + ok(b"stray"), ok(b"two"))) as server:
        conn = plain(server)
        assert get(conn).body == b"one"
        assert get(conn).body == b"one"  # a new connection: its first answer again
        conn.close()
    assert server.connections == 2


def test_interim_responses_are_skipped_and_bodiless_statuses_have_no_body() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final")
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    with scripted_server(answer_each(interim, no_content, ok(b"x"))) as server:
        conn = plain(server)
        assert get(conn).body == b"final"
        assert get(conn) == HttpResponse(204, {}, b"")
        assert get(conn).body == b"x"
        conn.close()


# --- the stale kept-alive socket ------------------------------------------------------------


def _close_idle(how: str, sock: socket.socket) -> None:
    """Close an idle kept-alive connection the way ``how`` says."""
    if how == "reset":
        reset(sock)
        return
    if how == "tls-close-notify":
        try:
            sock.unwrap()  # type: ignore[attr-defined]  # sends close_notify
        except OSError:
            pass  # the client's next request arrived after our close_notify
        return
    # "fin" (plain) or "tls-eof" (a TLS socket: a TCP FIN without close_notify); the socket
    # stays open until the client closes its end, so no reset follows
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(65536):
        pass


@pytest.mark.parametrize("how", ["fin", "reset", "tls-eof", "tls-close-notify"])
def test_kept_alive_socket_closed_by_the_server_is_retried_once(how: str) -> None:
    def handler(index: int, sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(ok(b"first" if index == 0 else b"second"))
        if index == 0:
            _close_idle(how, sock)
        else:
            read_request(sock)

    with scripted_server(handler, tls=how.startswith("tls")) as server:
        if server.cert_der is None:
            conn = plain(server)
            send = get
        else:
            transport = PinnedTlsTransport("127.0.0.1", server.port, server.cert_der, 10)
            conn = transport._conn()

            def send(c: Http11Connection) -> HttpResponse:
                return transport.request("POST", "/run", b"payload")

        assert send(conn).body == b"first"
        wait_closed_by_server(conn)
        assert send(conn).body == b"second"
        conn.close()
    assert server.connections == 2


def test_a_streamed_body_is_sent_again_in_full_on_the_retry() -> None:
    seen: list[bytes] = []

    def handler(index: int, sock: socket.socket) -> None:
        seen.append(read_request(sock).partition(b"\r\n\r\n")[2])
        sock.sendall(ok())
        if index == 0:
            _close_idle("fin", sock)

    with scripted_server(handler) as server:
        conn = plain(server)

        def stream() -> Iterator[bytes]:
            yield b"abc"
            yield b"def"

        conn.request("POST", "/upload", stream, {}, body_length=6)
        wait_closed_by_server(conn)
        conn.request("POST", "/upload", stream, {}, body_length=6)
        conn.close()
    assert seen == [b"abcdef", b"abcdef"]


@pytest.mark.parametrize(
    ("ending", "error", "text"),
    [("close", ProtocolError, "mid-response"), ("reset", NetworkError, "broke mid-response")],
)
def test_no_retry_once_the_response_has_started(
    ending: str, error: type[Exception], text: str
) -> None:
    def handler(index: int, sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(ok(b"first"))
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        if ending == "reset":
            reset(sock)

    with scripted_server(handler) as server:
        conn = plain(server)
        get(conn)
        with pytest.raises(error, match=text):
            get(conn)
    assert server.connections == 1


def test_no_retry_on_a_new_connection() -> None:
    def handler(_: int, sock: socket.socket) -> None:
        read_request(sock)  # and close without a word

    with scripted_server(handler) as server:
        with pytest.raises(NetworkError, match="did not answer") as info:
            get(plain(server))
    assert server.connections == 1
    assert not isinstance(info.value, RequestTimeout)


def test_only_one_retry() -> None:
    def handler(index: int, sock: socket.socket) -> None:
        read_request(sock)
        if index == 0:
            sock.sendall(ok())
            _close_idle("fin", sock)
        # the retried request gets no answer either

    with scripted_server(handler) as server:
        conn = plain(server)
        get(conn)
        wait_closed_by_server(conn)
        with pytest.raises(NetworkError, match="did not answer"):
            get(conn)
    assert server.connections == 2


# --- limits and strict parsing --------------------------------------------------------------


def test_content_length_over_the_cap_is_refused_before_reading_the_body() -> None:
    def handler(_: int, sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n")
        server.release.wait(10)  # the body never comes: the client must not wait for it

    with scripted_server(handler) as server:
        with pytest.raises(ProtocolError, match="limit of 1000 bytes"):
            get(plain(server, max_body=1000))


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"190\r\n" + b"x" * 400 + b"\r\n"
        b"190\r\n" + b"x" * 400 + b"\r\n" + b"190\r\n" + b"x" * 400 + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1200,
    ],
    ids=["chunked", "read-to-close"],
)
def test_bodies_over_the_cap_are_refused(response: bytes) -> None:
    with scripted_server(answer_each(response)) as server:
        with pytest.raises(ProtocolError, match="max_response_bytes"):
            get(plain(server, max_body=1000))


@pytest.mark.parametrize(
    ("response", "text"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nxx", "Content-Length"),  # "²"
        (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nxx", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nxx", "Content-Length"),
        (b"HTTP/1.1 2\xb200 OK\r\nContent-Length: 0\r\n\r\n", "status line"),
        (b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", "status line"),
        (b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nxx\r\n0\r\n\r\n", "chunk"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\nxx\r\n0\r\n\r\n", "chunk"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n" + b"x" * 16, "chunk"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxxyy\r\n0\r\n\r\n", "chunk"),
        (b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n", "header"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 << 10) + b"\r\n\r\n", "too large"),
    ],
    ids=[
        "length-superscript-two",
        "length-5000-digits",
        "length-plus-sign",
        "length-twice",
        "status-superscript-two",
        "status-two-digits",
        "http-2",
        "chunk-size-0x",
        "chunk-size-plus",
        "chunk-size-underscore",
        "chunk-too-long",
        "folded-header",
        "head-too-large",
    ],
)
def test_malformed_responses_are_protocol_errors(response: bytes, text: str) -> None:
    with scripted_server(answer_each(response)) as server:
        with pytest.raises(ProtocolError, match=text):
            get(plain(server))


# --- socket failures ------------------------------------------------------------------------


def test_connection_refused_is_a_network_error() -> None:
    (port,) = free_ports(1)
    conn = Http11Connection(
        lambda: socket.create_connection(("127.0.0.1", port), 10),
        f"127.0.0.1:{port}",
        label=f"the unattested port 127.0.0.1:{port}",
    )
    with pytest.raises(NetworkError, match=f"cannot reach the unattested port 127.0.0.1:{port}"):
        get(conn)


def test_no_answer_within_the_timeout_is_a_request_timeout() -> None:
    answered = threading.Event()

    def handler(_: int, sock: socket.socket) -> None:
        read_request(sock)
        answered.wait(10)  # answers nothing until the client has given up

    with scripted_server(handler) as server:
        try:
            with pytest.raises(RequestTimeout, match="did not answer in time"):
                get(plain(server, timeout=0.2))
        finally:
            answered.set()


def test_large_bodies_are_received_whole_between_kept_alive_responses() -> None:
    big = bytes(range(256)) * 4099  # over one receive: read straight into its own buffer
    with scripted_server(answer_each(ok(b"a"), ok(big), ok(b"b"))) as server:
        conn = plain(server, max_body=1 << 21)
        assert [get(conn).body for _ in range(3)] == [b"a", big, b"b"]
        conn.close()
    assert server.connections == 1


# --- a server that never finishes: time and memory stay bounded ------------------------------


def _flood(sock: socket.socket, piece: bytes, end: bytes) -> None:
    """``piece`` over and over (256 KiB, four times the head limit), then ``end``: a client
    without the limit would read it all and end in a 200."""
    try:
        for _ in range((256 << 10) // len(piece)):
            sock.sendall(piece)
        sock.sendall(end)
    except OSError:
        pass  # the client gave up, as it should


def test_endless_interim_responses_are_refused() -> None:
    def handler(_: int, sock: socket.socket) -> None:
        read_request(sock)
        _flood(sock, b"HTTP/1.1 100 Continue\r\n\r\n" * 100, ok())

    with scripted_server(handler) as server:
        with pytest.raises(ProtocolError, match="interim 1xx responses included"):
            get(plain(server))


def test_endless_trailers_are_refused() -> None:
    def handler(_: int, sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n")
        _flood(sock, b"X-Trailer: t\r\n" * 100, b"\r\n")

    with scripted_server(handler) as server:
        with pytest.raises(ProtocolError, match="trailers are too large"):
            get(plain(server))


@pytest.mark.parametrize("where", ["head", "body"])
def test_a_dripping_response_ends_in_a_request_timeout(where: str) -> None:
    """One byte every 20 ms never trips the 0.5 s socket timeout, but the whole response must
    arrive within it (plus one second per 64 KiB): without that deadline this drip, 40 s long,
    would end in a 200."""
    body = b"x" * 2000
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    start = 0 if where == "head" else response.index(b"\r\n\r\n") + 5
    stop = threading.Event()

    def handler(_: int, sock: socket.socket) -> None:
        read_request(sock)
        try:
            sock.sendall(response[:start])
            for i in range(start, len(response)):
                sock.sendall(response[i : i + 1])
                if stop.wait(0.02):
                    return
        except OSError:
            pass

    with scripted_server(handler) as server:
        try:
            with pytest.raises(RequestTimeout, match=r"did not arrive within 0\.5 s"):
                get(plain(server, timeout=0.5))
        finally:
            stop.set()


def test_a_body_of_one_byte_chunks_costs_no_object_per_chunk() -> None:
    """64 KiB in 1-byte chunks: held as one buffer (a list of chunks took 2.7 MB, 42x)."""
    body = bytes(range(256)) * 256
    response = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"1\r\n%c\r\n" % b for b in body)
        + b"0\r\n\r\n"
    )
    with scripted_server(answer_each(response)) as server:
        conn = plain(server)
        tracemalloc.start()
        try:
            resp = get(conn)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            conn.close()
    assert resp.body == body
    assert peak < 1 << 20, f"peak {peak} bytes for a 64 KiB body"


def test_a_declared_length_is_not_allocated_before_the_bytes_arrive() -> None:
    """A 60-byte answer declaring 200 MB made the client allocate 200 MB at once (1 GiB with
    the default cap, before attestation, for anyone in the middle): past 64 MiB the buffer
    grows as the bytes arrive."""

    def handler(_: int, sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 200000000\r\n\r\nabc")

    with scripted_server(handler) as server:
        conn = plain(server, max_body=1 << 28)
        tracemalloc.start()
        try:
            with pytest.raises(ProtocolError, match="closed the connection mid-response"):
                get(conn)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 100_000_000, f"peak {peak} bytes for a 3-byte body"


def test_a_body_past_the_preallocation_is_received_whole() -> None:
    body = bytes(range(256)) * ((65 << 20) // 256 + 3)  # just past 64 MiB: the buffer grows
    with scripted_server(answer_each(ok(body), ok(b"next"))) as server:
        conn = plain(server, max_body=1 << 28)
        assert get(conn).body == body
        assert get(conn).body == b"next"
        conn.close()


def test_chunk_extensions_cannot_outweigh_the_body() -> None:
    """Each 1-byte chunk carried 60 KB of extension: 100 such chunks (6 MB for 100 bytes, and
    as many more as the server liked) were read to the end."""
    chunk = b"1;" + b"e" * 60_000 + b"\r\nx\r\n"
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

    def handler(_: int, sock: socket.socket) -> None:
        read_request(sock)
        try:
            sock.sendall(response)
            for _ in range(100):
                sock.sendall(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the client gave up, as it should

    with scripted_server(handler) as server:
        with pytest.raises(ProtocolError, match="framing outweighs its data"):
            get(plain(server))


def test_a_server_taking_a_streamed_body_slowly_ends_in_a_request_timeout() -> None:
    """The server takes 16 KiB every 40 ms (400 KiB/s, under this connection's 1 MiB/s floor):
    each piece beats the 0.5 s socket timeout, but the request must be taken within it plus
    one second per 1 MiB (2.5 s for 2 MiB). Before: no deadline on sending (each piece had the
    socket's timeout afresh: a server taking 1 MiB every 299 s held a 1 GiB upload for 3 days),
    and this one was sent in about 5 s, then answered 200."""
    body = [b"b" * 16384] * 128
    stop = threading.Event()

    def handler(_: int, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                data += sock.recv(1024)
            got = len(data) - data.index(b"\r\n\r\n") - 4
            while got < len(body) * 16384 and not stop.wait(0.04):
                got += len(sock.recv(16384))
            sock.sendall(ok())
        except OSError:
            pass

    def connect() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", server.port), 0.5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        return sock

    with scripted_server(handler) as server:
        conn = Http11Connection(connect, f"127.0.0.1:{server.port}", min_rate=1 << 20)
        try:
            with pytest.raises(RequestTimeout, match=r"not taken within 0\.5 s plus one second"):
                conn.request("POST", "/upload", lambda: iter(body), {}, len(body) * 16384)
        finally:
            stop.set()
            conn.close()
