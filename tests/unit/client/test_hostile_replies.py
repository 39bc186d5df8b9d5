"""Replies of a hostile attested server: an error message of any length and characters is
kept as one bounded line; replies with a number past a float or a datetime, or a hash of
other than byte values: a ProtocolError, never the OverflowError, ValueError or TypeError that
``float()``, ``datetime.fromtimestamp()`` and ``bytes()`` raise on them.

The server is a real TLS loopback server that passes simulation attestation, then answers each
route with the CBOR given (tests/unit/client/_attested.py).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest

import blindai
from blindai.attestation import Policy
from blindai.attestation.binding import expected_report_data
from blindai.client._attest import attest_server
from blindai.client._transport import PlainTransport
from blindai.client.connection import Connection
from blindai.errors import CollateralError, InvalidInput, ProtocolError
from blindai.server.attesters.simulation import SimulationAttester
from blindai.server.tls import TlsIdentity
from tests.unit.client._attested import attested_fake, simulated
from tests.unit.client._scripted import read_request, scripted_server

pytestmark = pytest.mark.filterwarnings(
    "ignore::blindai.attestation.simulation.SimulationModeWarning"
)

KEY = {"name": "k", "key_id": "id"}
CASES: list[tuple[str, str, Any, Callable[[Connection], object], str]] = [
    ("created-past-datetime", "/keys", [{**KEY, "created_ns": 2**70}], lambda c: c.list_keys(),
     "created_ns is out of range"),
    ("created-before-datetime", "/keys", [{**KEY, "created_ns": -(2**70)}],
     lambda c: c.list_keys(), "created_ns is out of range"),
    ("created-past-float", "/keys/revoke", {**KEY, "created_ns": 10**400},
     lambda c: c.revoke_key("k"), "created_ns is out of range"),
    ("embedding-past-float", "/run", {"result": {"kind": "embedding", "embedding": [10**400]}},
     lambda c: c.predict("m", text="t"), "embedding is out of range"),
    ("score-past-float", "/run",
     {"result": {"kind": "labels", "labels": [{"label": "a", "index": 0, "score": 10**400}]}},
     lambda c: c.predict("m", text="t"), "score is out of range"),
    ("hash-not-bytes", "/upload", {"model_id": "m", "hash": [300]},
     lambda c: c.upload_model(b"\x08\x07"), "hash must be bytes"),
    ("hash-not-ints", "/upload", {"model_id": "m", "hash": ["a"]},
     lambda c: c.upload_model(b"\x08\x07"), "hash must be bytes"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "reply", "call", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_out_of_range_reply_is_a_protocol_error(
    path: str, reply: Any, call: Callable[[Connection], object], text: str
) -> None:
    with _connected({path: (200, cbor2.dumps(reply))}) as conn:
        with pytest.raises(ProtocolError, match=text):
            call(conn)


@contextmanager
def _connected(answers: dict[str, tuple[int, bytes]]) -> Iterator[Connection]:
    with attested_fake(simulated(), answers=answers) as fake:
        with blindai.connect(
            "127.0.0.1",
            attested_server_port=fake.port,
            model_management_port=fake.port,
            simulation_mode=True,
            timeout=10,
        ) as conn:
            yield conn


def test_a_server_error_message_is_one_bounded_line() -> None:
    """The server's text goes into the exception the CLI prints: it was kept whole, newlines
    and terminal escape sequences included (a server could forge lines on the user's screen)."""
    forged = "bad input\nAttestation verified: OK\x1b[2J\r" + "x" * 100_000
    with _connected({"/delete": (400, cbor2.dumps(forged))}) as conn:
        with pytest.raises(InvalidInput) as caught:
            conn.delete_model("m")
    line = caught.value.diagnostics()
    assert line.startswith("InvalidInput: 400: delete: bad input Attestation verified: OK ")
    assert line.isprintable() and len(line) < 600 and line.endswith(" [...]")


# An unverified answer bigger than any evidence: an array of empty byte strings (cheap to
# decode, so that the test costs little even where the cap is missing). Of empty maps it would
# have cost the client 72 bytes of memory per byte sent.
_OVERSIZED = b"\x9a" + (5 << 20).to_bytes(4, "big") + b"\x40" * (5 << 20)


def test_an_oversized_attestation_reply_is_refused_unread() -> None:
    """``GET /attestation`` is read before the server is attested: capped at 4 MiB, not at
    max_response_bytes (1 GiB), since it is decoded whole."""
    oversized = (200, {"Content-Type": "application/cbor"}, _OVERSIZED)
    with attested_fake(lambda cert, nonce: oversized) as fake:
        with pytest.raises(ProtocolError, match="limit of 4194304 bytes \\(what it reads before"):
            blindai.connect(
                "127.0.0.1",
                attested_server_port=fake.port,
                model_management_port=fake.port,
                simulation_mode=True,
                timeout=10,
            )
        assert [r for r in fake.requests if not r.startswith("GET /attestation")] == []


@contextmanager
def _unattested(answers: dict[str, bytes]) -> Iterator[PlainTransport]:
    """A plain loopback server answering each path with its CBOR body (404 for others)."""

    def handler(index: int, sock: socket.socket) -> None:
        if sock.recv(1, socket.MSG_PEEK) == b"\x16":  # the client asking whether TLS is spoken
            return
        while raw := read_request(sock):
            body = answers.get(raw.split(b" ", 2)[1].decode())
            status = "200 OK" if body is not None else "404 Not Found"
            body = body if body is not None else b""
            sock.sendall(
                f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
            )

    with scripted_server(handler) as server:
        plain = PlainTransport("127.0.0.1", server.port, 10)
        try:
            yield plain
        finally:
            plain.close()


@pytest.mark.parametrize(
    ("path", "answer", "error", "text"),
    [
        ("/endorsements", {"certificates": 5, "collateral": None}, ProtocolError, "endorsements"),
        ("/endorsements", {"certificates": [], "collateral": 5}, ProtocolError, "endorsements"),
        ("/endorsements", [1], ProtocolError, "endorsements must be a CBOR map"),
        ("/collateral", 5, CollateralError, "BlindAI 0.6 collateral map"),
        ("/collateral", None, CollateralError, "BlindAI 0.6 collateral map"),
        ("/collateral", [[1]], CollateralError, "BlindAI 0.6 collateral map"),
    ],
)
def test_malformed_endorsements_of_the_unattested_port_are_typed_errors(
    sgx_set: Path, path: str, answer: Any, error: type[Exception], text: str
) -> None:
    """Before: TypeError ('int' object is not iterable, unhashable type: 'list'), a traceback in
    blindai attest HOST."""
    answers = {
        "/": cbor2.dumps(TlsIdentity.generate().cert_der),
        "/info": cbor2.dumps({"tee": "sgx"}),
        "/quote": cbor2.dumps((sgx_set / "quote.bin").read_bytes()),
        path: cbor2.dumps(answer),
    }
    policy = Policy.from_toml("[sgx]\nallow_any_measurement = true\n")
    with _unattested(answers) as plain:
        with pytest.raises(error, match=text):
            attest_server(plain, simulation_mode=False, policy=policy)


@pytest.mark.parametrize("path", ["/", "/info", "/quote"])
def test_an_oversized_answer_of_the_unattested_port_is_refused_unread(path: str) -> None:
    cert = TlsIdentity.generate().cert_der
    evidence = SimulationAttester(measurement=b"\1" * 32).evidence(expected_report_data(cert))
    honest = {
        "/": cbor2.dumps(cert),
        "/info": cbor2.dumps({"tee": "simulation"}),
        "/quote": cbor2.dumps(evidence),
    }

    with _unattested({**honest, path: _OVERSIZED}) as plain:
        with pytest.raises(ProtocolError, match="limit of 4194304 bytes \\(what it reads"):
            attest_server(plain, simulation_mode=True, policy=None)


@pytest.mark.parametrize("path", ["/", "/info", "/quote"])
def test_costly_cbor_from_the_unattested_port_is_refused(path: str) -> None:
    """A rational tag, decoded by cbor2 through a gcd quadratic in its size, in an answer read
    before the server is verified."""
    cert = TlsIdentity.generate().cert_der
    evidence = SimulationAttester(measurement=b"\1" * 32).evidence(expected_report_data(cert))
    honest = {"/": cbor2.dumps(cert), "/info": cbor2.dumps({}), "/quote": cbor2.dumps(evidence)}
    costly = cbor2.dumps(cbor2.CBORTag(30, [10**400, 3]))
    with _unattested({**honest, path: costly}) as plain:
        with pytest.raises(ProtocolError, match="is not valid CBOR"):
            attest_server(plain, simulation_mode=True, policy=None)


@pytest.mark.parametrize(
    ("path", "call"),
    [
        ("/run", lambda c: c.predict("m", {"x": np.zeros(1, np.float32)})),
        ("/models", lambda c: c.list_models()),
    ],
)
def test_a_reply_of_many_small_items_is_refused_before_it_is_decoded(
    path: str, call: Callable[[Connection], object]
) -> None:
    """8 MiB of empty maps, one byte of CBOR each: cbor2 made a 64-byte dict of each (the reply
    took 600 MB of the client; one of max_response_bytes, 1 GiB, some 70 GB) before the
    client saw that no map was a tensor."""
    import tracemalloc

    count = 8 << 20
    bomb = b"\xa1" + cbor2.dumps("outputs") + b"\x9a" + count.to_bytes(4, "big") + b"\xa0" * count
    with _connected({path: (200, bomb)}) as conn:
        tracemalloc.start()
        try:
            with pytest.raises(ProtocolError, match="not valid CBOR"):
                call(conn)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 64 << 20


_HUGE = 10**5000  # past the 4300 digits str() and repr() of an int may have


def test_an_attestation_reply_version_too_long_to_print_is_a_protocol_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the message naming the version called repr() on it, which raised ValueError
    ('Exceeds the limit (4300 digits)'): a traceback out of ``blindai attest HOST``."""
    from tests.unit.client._loopback import run_cli

    body = cbor2.dumps({"version": _HUGE})
    with attested_fake(lambda cert, nonce: (200, {"Content-Type": "application/cbor"}, body)) as f:
        with pytest.raises(ProtocolError, match="unsupported attestation reply version"):
            blindai.client.attest("127.0.0.1", attested_server_port=f.port, simulation_mode=True)
        port = str(f.port)
        assert (
            run_cli(monkeypatch, "attest", "127.0.0.1", "--attested-port", port, "--simulation")
            == 1
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith("ProtocolError: unsupported attestation reply")


def test_a_result_kind_too_long_to_print_is_a_protocol_error() -> None:
    with _connected({"/run": (200, cbor2.dumps({"result": {"kind": _HUGE}}))}) as conn:
        with pytest.raises(ProtocolError, match="unknown result kind"):
            conn.predict("m", text="t")


@pytest.mark.parametrize("encoding", ["ascii", "latin-1", "cp1252"])
def test_a_name_the_terminal_cannot_encode_is_printed_escaped(
    monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    """A model name in a script the output's encoding lacks (``blindai models > list.txt`` on
    Windows writes cp1252; a latin-1 locale; PYTHONIOENCODING=ascii). Before: print() raised
    UnicodeEncodeError, a traceback out of ``blindai models``."""
    import io
    import sys

    from tests.unit.client._loopback import run_cli

    listed = [{"model_id": "m1", "name": "模型\U0001f600", "hash": bytes(32), "size": 3}]
    out = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    with _connected({"/models": (200, cbor2.dumps(listed))}) as conn:
        port = str(conn._attested.port)
        monkeypatch.setattr(sys, "stdout", out)
        code = run_cli(monkeypatch, "models", "--host", "127.0.0.1", "--simulation",
                       "--attested-port", port, "--management-port", port)  # fmt: skip
    assert code == 0
    out.flush()
    text = out.buffer.getvalue().decode(encoding)  # type: ignore[attr-defined]
    assert "\\u6a21\\u578b\\U0001f600" in text
