"""A real TLS server on loopback playing a server's attested port, answering ``/attestation``.

Each connection is served by :func:`serve_connection`: ``GET /attestation[?nonce=]`` is
answered by ``reply(cert_der, nonce)`` (its own certificate, and the nonce the client sent),
every other request with a CBOR ``"ok"``. Every request line is recorded in ``requests`` (and
each request's whole head in ``heads``), so a test sees that nothing but the attestation left a
refusing client.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import cbor2

from blindai.attestation.binding import expected_report_data
from blindai.protocol.attestation import AttestationReply, encode_reply
from blindai.server.attesters.simulation import SimulationAttester
from tests.unit.client._scripted import read_request, scripted_server

Reply = Callable[[bytes, bytes | None], AttestationReply | tuple[int, dict[str, str], bytes]]


def simulated(
    *, measurement: bytes = b"\1" * 32, bind_nonce: bool = True, cert: bytes | None = None
) -> Reply:
    """Replies of an honest simulation server (``bind_nonce=False``: one that ignores the
    nonce and replays what it made in advance; ``cert``: evidence for another certificate)."""
    attester = SimulationAttester(measurement=measurement)

    def reply(cert_der: bytes, nonce: bytes | None) -> AttestationReply:
        bound = nonce if bind_nonce else None
        data = expected_report_data(cert or cert_der, nonce=bound)
        return AttestationReply(
            kind="simulation",
            certificate=cert_der,
            evidence=attester.evidence(data),
            nonce=nonce,
            info={"tee": "simulation"},
        )

    return reply


@dataclass
class AttestedFake:
    """Where it listens, its certificate, what it was asked, how many connections it took."""

    port: int
    cert_der: bytes
    requests: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)
    connections: int = 0

    @property
    def attestations(self) -> int:
        """How many ``GET /attestation`` requests were made."""
        return sum(r.startswith("GET /attestation") for r in self.requests)


def _answer(sock: socket.socket, status: int, headers: dict[str, str], body: bytes) -> None:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(head.encode("latin-1") + b"\r\n" + body)


@contextmanager
def attested_fake(
    reply: Reply,
    *,
    server_header: str = "blindai/test",
    answers: dict[str, tuple[int, bytes]] | None = None,
) -> Iterator[AttestedFake]:
    """Serve ``reply`` on a free loopback TLS port for the ``with`` block; ``answers``: the
    status and CBOR body answered to other requests, by path (default: 200 ``"ok"``)."""
    holder: list[AttestedFake] = []

    def handler(index: int, sock: socket.socket) -> None:
        state = holder[0]
        state.connections += 1
        while True:
            raw = read_request(sock)
            if not raw:
                return
            line = raw.split(b"\r\n", 1)[0].decode("latin-1")
            method, target = line.split(" ")[:2]
            state.requests.append(f"{method} {target}")
            state.heads.append(raw.partition(b"\r\n\r\n")[0].decode("latin-1"))
            cbor = {"Content-Type": "application/cbor", "Server": server_header}
            if not target.startswith("/attestation"):
                status, body = (answers or {}).get(urlsplit(target).path, (200, cbor2.dumps("ok")))
                _answer(sock, status, cbor, body)
                continue
            nonce_hex = parse_qs(urlsplit(target).query).get("nonce")
            nonce = bytes.fromhex(nonce_hex[0]) if nonce_hex else None
            found = reply(state.cert_der, nonce)
            if isinstance(found, tuple):
                status, headers, body = found
                _answer(sock, status, {"Server": server_header, **headers}, body)
            else:
                _answer(sock, 200, cbor, encode_reply(found))

    with scripted_server(handler, tls=True) as server:
        assert server.cert_der is not None
        holder.append(AttestedFake(server.port, server.cert_der))
        yield holder[0]
