"""An upload whose client leaves while its model compiles is stopped: its compile child is
killed, nothing is stored or registered, and the compile workers are free for the next one."""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterator

import cbor2
import pytest
from onnx import TensorProto

from tests import attacks
from tests._server import ServerProcess, connect, start_server
from tests.models import identity

HANG = 120.0
"""Only a guard against hanging forever when the behaviour under test is broken."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # compiling the slow model takes about a minute here: well within this timeout
    proc = start_server(tmp_path_factory.mktemp("abandoned"), "--compile-timeout", "600")
    yield proc
    proc.stop()


def _left(server: ServerProcess, body: bytes) -> None:
    """Send an upload whole on its own connection, and leave without reading the answer once
    the server has it."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection((server.host, server.management_port), timeout=HANG)
    with ctx.wrap_socket(raw) as sock:
        head = f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + body)
        time.sleep(2)  # the server has the body and compiles (left earlier, the body is cut)


def test_an_upload_whose_client_left_is_stopped(server: ServerProcess) -> None:
    slow = attacks.wide_ifs(20000)  # checked in the compile child for about a minute
    body = cbor2.dumps({"model": slow, "length": len(slow), "model_name": "left"})
    for _ in range(2):  # one per compile worker: before, both stayed busy for minutes
        _left(server, body)
    pattern = re.compile(r"POST /upload (\d+) ")
    deadline = time.monotonic() + HANG
    while len(pattern.findall(server.log())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pattern.findall(server.log()) == ["499", "499"], server.log()[-2000:]
    stopped = "an upload was stopped: its client went away before it was registered"
    assert server.log().count(stopped) == 2  # while they compiled, not while their bodies came
    with connect(server) as conn:  # the compile workers are free, and nothing was kept
        kept = conn.upload_model(identity(TensorProto.FLOAT, [1, 3]), model_name="kept")
        assert [m.name for m in conn.list_models()] == ["kept"]
        conn.delete_model(kept.model_id)
