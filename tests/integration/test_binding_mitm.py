"""The channel binding under attack: men in the middle of the attested and unattested ports.

The evidence is genuine (a real simulation server's), so the verifier accepts it; what must
refuse is the binding of the TLS certificate of *the connection in use* to the evidence's report
data. Every TLS connection is verified on itself (``GET /attestation``): an attacker who ends
TLS and relays to a real server is refused before any other request leaves the client. A
server of the previous version (no ``/attestation``) is verified on its unattested port, as in
BlindAI 0.6, and then only the certificate found there is accepted.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto

import blindai
from blindai.attestation.simulation import SimulationModeWarning
from blindai.client import AttestationStats
from blindai.errors import BindingError, VerificationError, WrongPort
from blindai.server.tls import TlsIdentity
from tests._fakes.mitm import UnattestedMitm
from tests._fakes.server_log import attested_requests
from tests._fakes.tls_relay import TlsRelay
from tests._server import ServerProcess, free_ports, start_server
from tests.models import identity

# every new replica verified is a use of simulation mode, which warns each time
pytestmark = pytest.mark.filterwarnings(
    "ignore::blindai.attestation.simulation.SimulationModeWarning"
)


def _connect(host: str, **kwargs: Any) -> blindai.Connection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SimulationModeWarning)
        return blindai.connect(host, simulation_mode=True, **kwargs)


def _upload_and_run(conn: blindai.Connection) -> Any:
    uploaded = conn.upload_model(identity(TensorProto.FLOAT))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = conn.run_model(model_id=uploaded.model_id, input_tensors={"x": x}).output[0]
    conn.delete_model(uploaded.model_id)
    return out.as_numpy()


def test_connect_does_not_read_the_unattested_port(server: ServerProcess) -> None:
    """Control: a passthrough proxy of the unattested port is not even asked."""
    with (
        UnattestedMitm(server.host, server.unattested_port) as mitm,
        _connect(server.host, **{**server.ports, "unattested_server_port": mitm.port}) as conn,
    ):
        out = _upload_and_run(conn)
    np.testing.assert_array_equal(out, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert mitm.paths == []


@pytest.mark.parametrize("rewrite", [False, True], ids=["relayed", "certificate-rewritten"])
def test_tls_ended_by_an_attacker_is_refused_before_any_request(
    server: ServerProcess, rewrite: bool
) -> None:
    before = attested_requests(server.log())
    with TlsRelay(server.host, server.attested_port, rewrite_certificate=rewrite) as relay:
        with pytest.raises(BindingError) as info:
            _connect(server.host, **{**server.ports, "attested_server_port": relay.port})
    if rewrite:  # the reply names the attacker's certificate: the evidence binds another
        assert "does not bind this TLS certificate" in str(info.value)
        assert hashlib.sha256(relay.identity.cert_der).hexdigest() in str(info.value)
    else:
        assert "names another certificate" in str(info.value)
    assert relay.paths == ["GET /attestation"]
    assert attested_requests(server.log())[len(before) :] == ["GET /attestation"]


def test_a_management_connection_to_an_attacker_is_refused(server: ServerProcess) -> None:
    """The first connection reached the real server; the management port is the attacker's."""
    before = attested_requests(server.log())
    with TlsRelay(server.host, server.management_port, rewrite_certificate=True) as relay:
        with _connect(server.host, **{**server.ports, "model_management_port": relay.port}) as c:
            with pytest.raises(BindingError):
                c.upload_model(identity(TensorProto.FLOAT))
            assert c.attestation_stats.refused == 1
    assert relay.paths == ["GET /attestation"]
    assert not [r for r in attested_requests(server.log())[len(before) :] if "upload" in r]


# --- a server without /attestation: the 0.6 flow on its unattested port ----------------------


def test_previous_server_is_verified_on_its_unattested_port(previous_server: ServerProcess) -> None:
    with (
        UnattestedMitm(previous_server.host, previous_server.unattested_port) as mitm,
        _connect(
            previous_server.host,
            **{**previous_server.ports, "unattested_server_port": mitm.port},
        ) as conn,
    ):
        out = _upload_and_run(conn)
    np.testing.assert_array_equal(out, np.arange(6, dtype=np.float32).reshape(2, 3))
    # the first connection asked /attestation, got a plain 404 and fell back; the management
    # connection presented the same certificate: admitted from the cache
    assert mitm.paths.count("/quote") == 1 and "/" in mitm.paths
    assert conn.attestation_stats == AttestationStats(verified=1, reused=1, refused=0)


def test_previous_server_substituted_certificate_is_a_binding_error(
    previous_server: ServerProcess,
) -> None:
    before = attested_requests(previous_server.log())
    attacker = TlsIdentity.generate()
    ports = previous_server.ports
    with UnattestedMitm(
        previous_server.host, previous_server.unattested_port, substitute_cert=attacker.cert_der
    ) as mitm:
        with pytest.raises(BindingError) as info:
            _connect(previous_server.host, **{**ports, "unattested_server_port": mitm.port})
    assert "does not bind this TLS certificate" in str(info.value)
    assert hashlib.sha256(attacker.cert_der).hexdigest() in str(info.value)  # the attacker's
    assert {"/", "/quote"} <= set(mitm.paths)  # the evidence was fetched, and refused
    assert attested_requests(previous_server.log()) == before  # nothing was sent


def test_previous_server_behind_another_tls_server_is_a_binding_error(
    previous_server: ServerProcess,
) -> None:
    """The unattested port vouches for one certificate; the attested port shows another."""
    with TlsRelay(previous_server.host, previous_server.attested_port) as relay:
        with pytest.raises(BindingError, match="not the one its unattested port vouches for"):
            _connect(
                previous_server.host,
                **{**previous_server.ports, "attested_server_port": relay.port},
            )
    assert relay.paths == ["GET /attestation"]


def test_previous_server_cannot_give_fresh_evidence(previous_server: ServerProcess) -> None:
    with pytest.raises(VerificationError, match="fresh evidence was asked"):
        _connect(previous_server.host, nonce=True, **previous_server.ports)


def test_unreachable_unattested_port_of_a_previous_server(previous_server: ServerProcess) -> None:
    (port,) = free_ports(1)
    with pytest.raises(blindai.errors.NetworkError, match="cannot reach the unattested port"):
        _connect(previous_server.host, **{**previous_server.ports, "unattested_server_port": port})


@pytest.mark.parametrize("other", ["attested", "management"])
def test_previous_server_unattested_port_given_a_tls_port(
    previous_server: ServerProcess, other: str
) -> None:
    port = previous_server.attested_port if other == "attested" else previous_server.management_port
    with pytest.raises(WrongPort) as info:
        _connect(previous_server.host, **{**previous_server.ports, "unattested_server_port": port})
    err = info.value
    assert (err.port, err.role, err.found) == (port, "unattested", "TLS")
    assert f"port {port}, given as the unattested port, speaks TLS" in str(err)
    assert "the unattested port is usually 9923" in str(err)


def test_two_servers_each_verified_on_its_own_connection(
    server: ServerProcess, tmp_path: Any
) -> None:
    """A second server (another key) on the management port: verified there, not refused."""
    other = start_server(tmp_path)
    try:
        with _connect(
            server.host, **{**server.ports, "model_management_port": other.management_port}
        ) as conn:
            conn.upload_model(identity(TensorProto.FLOAT), model_name="mitm-two")
            assert conn.attestation_stats.verified == 2
            assert {p.cert_der for p in conn.replicas} == {conn.certificate, _cert(other)}
    finally:
        other.stop()


def _cert(server: ServerProcess) -> bytes:
    import urllib.request

    import cbor2

    with urllib.request.urlopen(f"http://{server.host}:{server.unattested_port}/", timeout=10) as r:
        return cbor2.loads(r.read())  # type: ignore[no-any-return]
