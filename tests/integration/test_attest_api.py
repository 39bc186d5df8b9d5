"""``blindai.client.attest()`` against real servers: it verifies the replica on the attested port.

The evidence is read with ``GET /attestation`` on one TLS connection to the attested port and
must bind the certificate of that connection; the unattested port (which a load balancer may
route to another replica) is read only for a server without that route. ``nonce=True`` asks
for evidence over a nonce of this client, and refuses a server that cannot give it.
"""

from __future__ import annotations

import hashlib
import ssl
import time

import pytest

from blindai.client import attest
from blindai.errors import BindingError, VerificationError
from tests._fakes.mitm import UnattestedMitm
from tests._fakes.server_log import attested_requests
from tests._server import ServerProcess

pytestmark = pytest.mark.filterwarnings(
    "ignore::blindai.attestation.simulation.SimulationModeWarning"
)


def _attested_cert(server: ServerProcess) -> bytes:
    pem = ssl.get_server_certificate((server.host, server.attested_port))
    return ssl.PEM_cert_to_DER_cert(pem)


def _logged_after(server: ServerProcess, before: list[str], count: int) -> list[str]:
    """The attested requests logged after ``before``, once ``count`` more are (a request is
    logged after it is answered)."""
    deadline = time.monotonic() + 30
    while len(now := attested_requests(server.log())) < len(before) + count:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return now[len(before) :]


@pytest.mark.parametrize("nonce", [False, True], ids=["cached-evidence", "fresh"])
def test_attest_reads_the_attested_port_only(
    server: ServerProcess, previous_server: ServerProcess, nonce: bool
) -> None:
    """The unattested port given is another replica's: it is never asked."""
    before = attested_requests(server.log())
    with UnattestedMitm(previous_server.host, previous_server.unattested_port) as other:
        attested = attest(
            server.host,
            other.port,
            attested_server_port=server.attested_port,
            simulation_mode=True,
            nonce=nonce,
        )
    cert = _attested_cert(server)
    assert attested.cert_der == cert
    assert attested.digest == hashlib.sha256(cert).digest()
    assert (attested.verified_on, attested.fresh) == ("attested", nonce)
    assert attested.claims.kind.value == "simulation"
    assert attested.server_info.get("tee") == "simulation"
    assert other.paths == []
    assert _logged_after(server, before, 1) == ["GET /attestation"]


def test_attest_falls_back_to_the_unattested_port(previous_server: ServerProcess) -> None:
    server = previous_server
    with UnattestedMitm(server.host, server.unattested_port) as unattested:
        attested = attest(
            server.host,
            unattested.port,
            attested_server_port=server.attested_port,
            simulation_mode=True,
        )
    assert attested.cert_der == _attested_cert(server)
    assert (attested.verified_on, attested.fresh) == ("unattested", False)
    assert unattested.paths[:1] == ["/"] and "/quote" in unattested.paths


def test_attest_fresh_refuses_a_server_without_the_route(previous_server: ServerProcess) -> None:
    server = previous_server
    with UnattestedMitm(server.host, server.unattested_port) as unattested:
        with pytest.raises(VerificationError, match="fresh evidence was asked"):
            attest(
                server.host,
                unattested.port,
                attested_server_port=server.attested_port,
                simulation_mode=True,
                nonce=True,
            )
    assert unattested.paths == []


def test_attest_fallback_refuses_another_replicas_certificate(
    server: ServerProcess, previous_server: ServerProcess
) -> None:
    """A server without the route, whose unattested port (through a balancer) is another
    replica's: the certificate vouched for there is not the attested port's."""
    with UnattestedMitm(server.host, server.unattested_port) as other:
        with pytest.raises(BindingError, match="another replica"):
            attest(
                previous_server.host,
                other.port,
                attested_server_port=previous_server.attested_port,
                simulation_mode=True,
            )
    assert "/quote" in other.paths
