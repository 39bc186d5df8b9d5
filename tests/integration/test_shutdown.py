"""Stopping a real server with SIGTERM or SIGINT: requests in flight are answered, idle
connections do not hold the stop, what is left at ``--shutdown-timeout`` gets 503, and the
process exits 0 after cleaning up.

A request is held in flight by ``Expect: 100-continue``: the server's ``100 Continue`` shows
that the request reached the app, which then waits for the body the test sends (or never
sends) once the server has logged that it is stopping.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from blindai.protocol.names import ERROR_HEADER
from tests._server import ServerProcess, connect, start_server
from tests.models import add_constant

HANG = 30.0
BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
).encode()


@pytest.fixture
def stopping(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    timeout = getattr(request, "param", "60")
    server = start_server(tmp_path, "--shutdown-timeout", timeout, "--keep-alive-timeout", "300")
    try:
        yield server
    finally:
        server.stop()


def _held(server: ServerProcess, model_id: str) -> ssl.SSLSocket:
    """A v2 inference whose body waits: the server has answered ``100 Continue``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sock = ctx.wrap_socket(
        socket.create_connection((server.host, server.attested_port), timeout=HANG)
    )
    sock.sendall(
        f"POST /v2/models/{model_id}/infer HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    return sock


def _answer(sock: ssl.SSLSocket) -> tuple[str, dict[str, str], bytes]:
    """The whole answer, read until the server closes the connection (then closed here too,
    as a client does)."""
    data = b""
    with contextlib.suppress(ConnectionError, ssl.SSLError), sock:
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *fields = head.decode("latin-1").split("\r\n")
    named = (f.split(": ", 1) for f in fields)
    return status, {name.lower(): value for name, value in named}, body


def _signal(server: ServerProcess, sig: signal.Signals, nth: int = 1) -> None:
    server.process.send_signal(sig)
    deadline = time.monotonic() + HANG
    while server.log().count("stopping") < nth:
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.01)


def _refused(server: ServerProcess) -> bool:
    """New connections are refused (the ports stop listening within the servers' next tick).

    A connection the kernel queued as the port closed is reset instead: tried again (the next
    is refused); it failed the test once."""
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        try:
            socket.create_connection((server.host, server.attested_port), timeout=HANG).close()
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            pass
        time.sleep(0.05)
    return False


def _exit_status(server: ServerProcess) -> int:
    return server.process.wait(HANG)


def test_sigterm_answers_the_request_in_flight_and_does_not_wait_for_idle_ones(
    stopping: ServerProcess,
) -> None:
    """The process died of its own SIGTERM (-15) without cleaning up, after waiting 30 s for
    each idle TLS connection's close_notify."""
    with connect(stopping) as idle:  # kept alive on two ports until the test ends
        model_id = idle.upload_model(add_constant(10)).model_id
        held = _held(stopping, model_id)

        _signal(stopping, signal.SIGTERM)
        assert _refused(stopping)
        held.sendall(BODY)
        status, headers, body = _answer(held)

        assert status == "HTTP/1.1 200 OK"
        assert headers["connection"] == "close"
        assert json.loads(body)["outputs"][0]["data"] == [11.0, 12.0]
        assert _exit_status(stopping) == 0  # with an idle connection kept alive for 300 s
        log = stopping.log()
        assert (
            "SIGTERM: stopping; no new connections, 1 HTTP request(s) in flight have up to 60 s"
            in log
        )
        assert log.rstrip().endswith("INFO blindai.server: stopped")


@pytest.mark.parametrize("stopping", ["0.2"], indirect=True)
def test_a_request_still_in_flight_at_the_shutdown_timeout_gets_503(
    stopping: ServerProcess,
) -> None:
    with connect(stopping) as client:
        held = _held(stopping, client.upload_model(add_constant(1)).model_id)
    _signal(stopping, signal.SIGTERM)
    status, headers, body = _answer(held)  # its body never comes

    assert status == "HTTP/1.1 503 Service Unavailable"
    assert headers[ERROR_HEADER.lower()] == "ServerBusy"
    assert body == b"the server stopped before answering this request; send it again"
    assert _exit_status(stopping) == 0
    assert (
        "shutdown timeout (0.2 s) reached: 1 HTTP request(s) and any gRPC calls still in "
        "flight are cut"
    ) in stopping.log()


def test_a_second_signal_stops_at_once(stopping: ServerProcess) -> None:
    with connect(stopping) as client:
        held = _held(stopping, client.upload_model(add_constant(1)).model_id)
    _signal(stopping, signal.SIGTERM)
    _signal(stopping, signal.SIGINT, nth=2)  # the shutdown timeout is a minute
    status, _, _ = _answer(held)

    assert status == "HTTP/1.1 503 Service Unavailable"
    assert _exit_status(stopping) == 0
    assert "SIGINT again: stopping now, requests in flight are cut" in stopping.log()


@pytest.mark.parametrize("stopping", ["2"], indirect=True)
def test_the_grpc_port_stops_too(stopping: ServerProcess) -> None:
    """The gRPC server was stopped only after every HTTP port had, and the process then died
    of its own signal. A call whose message has not all come (grpc-core has matched it to its
    handler once the channel is up) is cut at the shutdown timeout (2 s here) like any call in
    progress, and the process exits 0."""
    import grpc

    from blindai.client._transport import PlainTransport
    from tests.integration.test_limits import _held

    plain = PlainTransport(stopping.host, stopping.unattested_port, HANG)
    certificate = cbor2.loads(plain.request("GET", "/").body)
    plain.close()
    with _held(stopping, certificate, 1) as (calls, _):
        _signal(stopping, signal.SIGTERM)
        assert isinstance(calls[0].exception(timeout=HANG), grpc.RpcError)
        assert _exit_status(stopping) == 0
