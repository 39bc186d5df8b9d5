"""Per-connection attestation: the gate, its cache, and the attested transport, over real TLS.

The peer is a loopback TLS server answering ``GET /attestation`` as a test scripts it
(``_attested.py``); every request line it receives is recorded, so each refusal is checked to
happen before any request other than the attestation itself.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone
from typing import Any

import cbor2
import pytest

from blindai.attestation import simulation
from blindai.client._attest import Attested
from blindai.client._peers import (
    AttestationCache,
    AttestationStats,
    PeerAttestation,
    PeerGate,
    VerifyOptions,
)
from blindai.client._transport import AttestedTlsTransport
from blindai.errors import (
    BindingError,
    ConfigurationError,
    EvidenceError,
    PolicyError,
    ServerBusy,
    VerificationError,
)
from blindai.protocol.attestation import AttestationReply
from tests.unit.client._attested import AttestedFake, attested_fake, simulated

pytestmark = pytest.mark.filterwarnings(
    "ignore::blindai.attestation.simulation.SimulationModeWarning"
)
SIM = VerifyOptions(simulation_mode=True, policy=None)


class Clock:
    """Monotonic seconds a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _transport(fake: AttestedFake, gate: PeerGate, **kwargs: Any) -> AttestedTlsTransport:
    return AttestedTlsTransport("127.0.0.1", fake.port, 10, gate=gate, **kwargs)


def _claims(cert: bytes = b"c") -> Any:
    return simulation.SimulationClaims(
        kind=simulation.EvidenceKind.SIMULATION,
        measurement=b"\0" * 32,
        report_data=b"\0" * 64,
        debug=True,
        verified_at=datetime.now(timezone.utc),
        server_version="x",
    )


# --- the cache ------------------------------------------------------------------------------


def test_cache_entries_expire_after_ttl():
    clock = Clock()
    cache = AttestationCache(ttl=60, clock=clock)
    peer = PeerAttestation(b"cert", _claims())
    cache.put("scope", peer)
    assert cache.get("scope", peer.digest) == peer
    clock.now += 59.9
    assert cache.get("scope", peer.digest) == peer
    clock.now += 0.1
    assert cache.get("scope", peer.digest) is None
    assert len(cache) == 0


def test_cache_keeps_scopes_apart():
    cache = AttestationCache()
    peer = PeerAttestation(b"cert", _claims())
    cache.put("policy A", peer)
    assert cache.get("policy B", peer.digest) is None
    assert cache.peers("policy A") == [peer] and cache.peers("policy B") == []
    assert cache.peers() == [peer]


def test_cache_drops_the_oldest_beyond_max_entries():
    cache = AttestationCache(max_entries=2)
    peers = [PeerAttestation(bytes([i]), _claims()) for i in range(3)]
    for p in peers:
        cache.put("s", p)
    assert cache.peers("s") == peers[1:]
    cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize("kwargs", [{"ttl": 0}, {"max_entries": 0}])
def test_cache_refuses_useless_settings(kwargs: dict[str, Any]):
    with pytest.raises(ConfigurationError):
        AttestationCache(**kwargs)


# --- the gate on real connections -------------------------------------------------------------


def test_first_connection_is_verified_then_cached():
    with attested_fake(simulated()) as fake:
        gate = PeerGate(SIM)
        t = _transport(fake, gate, keep_alive=False)
        peer = t.open()
        assert peer.cert_der == fake.cert_der and not peer.fresh
        assert peer.server_info == {"tee": "simulation"}
        for _ in range(3):  # one connection per request: later ones admitted from the cache
            assert cbor2.loads(t.request("POST", "/run", b"x").body) == "ok"
        t.close()
    assert gate.stats == AttestationStats(verified=1, reused=2, refused=0)
    assert fake.attestations == 1 and fake.connections == 3
    assert fake.requests.count("POST /run") == 3


def test_an_expired_replica_is_verified_again():
    clock = Clock()
    with attested_fake(simulated()) as fake:
        gate = PeerGate(SIM, cache=AttestationCache(ttl=10, clock=clock))
        t = _transport(fake, gate, keep_alive=False)
        t.request("POST", "/run", b"x")
        clock.now += 11
        t.request("POST", "/run", b"x")
        t.close()
    assert gate.stats.verified == 2 and fake.attestations == 2


def test_a_cache_is_shared_between_gates_with_the_same_settings():
    cache = AttestationCache()
    with attested_fake(simulated()) as fake:
        for _ in range(2):
            t = _transport(fake, PeerGate(SIM, cache=cache))
            t.open()
            t.close()
        fresh = _transport(fake, PeerGate(SIM, cache=cache, nonce=True))  # another scope
        assert fresh.open().fresh
        fresh.close()
    assert fake.attestations == 2


def test_fresh_evidence_binds_the_nonce_sent():
    with attested_fake(simulated()) as fake:
        gate = PeerGate(SIM, nonce=True)
        t = _transport(fake, gate)
        assert t.open().fresh
        t.close()
    (asked,) = fake.requests
    assert (
        asked.startswith("GET /attestation?nonce=")
        and len(asked) == len("GET /attestation?nonce=") + 64
    )


def _refused(fake: AttestedFake, gate: PeerGate, error: type[Exception], match: str) -> None:
    t = _transport(fake, gate)
    with pytest.raises(error, match=match):
        t.request("POST", "/run", b"secret inputs")
    t.close()
    assert "POST /run" not in fake.requests
    assert gate.stats.refused >= 1 and gate.stats.verified == 0


def test_replayed_evidence_is_refused_with_a_nonce():
    with attested_fake(simulated(bind_nonce=False)) as fake:
        _refused(fake, PeerGate(SIM, nonce=True), BindingError, "not this connection's nonce")
        # the same replay passes a client that does not ask for freshness
        t = _transport(fake, PeerGate(SIM))
        t.open()
        t.close()


def test_evidence_for_another_certificate_is_refused():
    with attested_fake(simulated(cert=b"another certificate")) as fake:
        _refused(fake, PeerGate(SIM), BindingError, "does not bind this TLS certificate")


def test_a_reply_naming_another_certificate_is_refused():
    inner = simulated()

    def reply(cert: bytes, nonce: bytes | None) -> AttestationReply:
        found = inner(cert, nonce)
        assert isinstance(found, AttestationReply)
        return AttestationReply(found.kind, b"other", found.evidence, found.nonce)

    with attested_fake(reply) as fake:
        _refused(fake, PeerGate(SIM), BindingError, "names another certificate")


def test_a_reply_for_another_nonce_is_refused():
    inner = simulated()

    def reply(cert: bytes, nonce: bytes | None) -> AttestationReply:
        found = inner(cert, b"\0" * 32)
        assert isinstance(found, AttestationReply)
        return found

    with attested_fake(reply) as fake:
        _refused(fake, PeerGate(SIM, nonce=True), BindingError, "not for this connection's nonce")


def test_another_simulated_measurement_is_refused_when_pinned(caplog: pytest.LogCaptureFixture):
    pinned = simulation.UnsafeSimulationVerifier(expected_measurement=b"\1" * 32)
    options = VerifyOptions(simulation_mode=True, policy=None, verifier=pinned)
    with attested_fake(simulated(measurement=b"\2" * 32)) as fake:
        with caplog.at_level(logging.WARNING, logger="blindai.client"):
            _refused(fake, PeerGate(options), PolicyError, "measurement")
    digest = hashlib.sha256(fake.cert_der).hexdigest()[:16]
    assert f"refused the attested port 127.0.0.1:{fake.port} (certificate {digest}" in caplog.text
    with attested_fake(simulated(measurement=b"\1" * 32)) as fake:
        t = _transport(fake, PeerGate(options))
        t.open()
        t.close()


def test_simulated_evidence_is_refused_outside_simulation_mode():
    real = VerifyOptions(simulation_mode=False, policy=None)
    with attested_fake(simulated()) as fake:
        _refused(fake, PeerGate(real), VerificationError, "SIMULATED evidence")
    with attested_fake(simulated(), server_header="blindai/x (simulation; mock)") as fake:
        _refused(fake, PeerGate(real), VerificationError, "SIMULATION mode")


def test_real_evidence_needs_a_policy():
    def reply(cert: bytes, nonce: bytes | None) -> AttestationReply:
        return AttestationReply(kind="sev-snp", certificate=cert, evidence=b"\0" * 1184)

    real = VerifyOptions(simulation_mode=False, policy=None)
    with attested_fake(reply) as fake:
        _refused(fake, PeerGate(real), ConfigurationError, "a policy is required")


def test_an_unknown_evidence_kind_is_refused():
    def reply(cert: bytes, nonce: bytes | None) -> AttestationReply:
        return AttestationReply(kind="quantum", certificate=cert, evidence=b"?")

    real = VerifyOptions(simulation_mode=False, policy=None)
    with attested_fake(reply) as fake:
        _refused(fake, PeerGate(real), EvidenceError, "unknown evidence kind 'quantum'")


def test_an_error_answer_is_the_error_the_server_names():
    busy = (
        503,
        {"Content-Type": "application/cbor", "X-BlindAI-Error": "ServerBusy"},
        cbor2.dumps("4 fresh-evidence requests are already pending"),
    )
    with attested_fake(lambda cert, nonce: busy) as fake:
        _refused(fake, PeerGate(SIM), ServerBusy, "GET /attestation: 4 fresh-evidence")


# --- servers without /attestation ----------------------------------------------------------


def _not_found(cert: bytes, nonce: bytes | None) -> tuple[int, dict[str, str], bytes]:
    return 404, {"Content-Type": "text/plain"}, b"Not Found"


def _legacy(cert: bytes) -> Attested:
    return Attested(cert, _claims(), {"tee": "simulation"})


def test_without_the_route_the_unattested_port_vouches():
    with attested_fake(_not_found) as fake:
        gate = PeerGate(SIM, legacy=lambda: _legacy(fake.cert_der))
        t = _transport(fake, gate, keep_alive=False)
        t.request("POST", "/run", b"x")
        t.request("POST", "/run", b"x")
        t.close()
    assert gate.stats == AttestationStats(verified=1, reused=1, refused=0)


def test_without_the_route_another_certificate_is_refused():
    with attested_fake(_not_found) as fake:
        gate = PeerGate(SIM, legacy=lambda: _legacy(b"the unattested port's"))
        _refused(fake, gate, BindingError, "not the one its unattested port vouches for")


def test_without_the_route_fresh_evidence_cannot_be_had():
    with attested_fake(_not_found) as fake:
        gate = PeerGate(SIM, nonce=True, legacy=lambda: _legacy(fake.cert_der))
        _refused(fake, gate, VerificationError, "fresh evidence was asked")


def test_without_the_route_and_no_fallback():
    with attested_fake(_not_found) as fake:
        _refused(fake, PeerGate(SIM), VerificationError, "serves no GET /attestation")


def test_without_the_route_a_server_section_cannot_be_checked():
    """The unattested port's /info is not the attested code's word: a policy that requires a
    configuration refuses a server without GET /attestation."""
    from blindai.attestation.policy import Policy
    from blindai.attestation.server_config import ServerPolicy

    options = VerifyOptions(
        simulation_mode=True, policy=Policy(server=ServerPolicy(allow_model_export=False))
    )
    with attested_fake(_not_found) as fake:
        gate = PeerGate(options, legacy=lambda: _legacy(fake.cert_der))
        _refused(fake, gate, VerificationError, "cannot state its configuration")


def test_a_peer_that_closes_instead_of_answering_is_a_network_error():
    """The connection ends during ``GET /attestation``: a NetworkError, nothing else sent."""
    from blindai.errors import NetworkError
    from tests.unit.client._scripted import read_request, scripted_server

    asked: list[bytes] = []

    def close_after_reading(index: int, sock: Any) -> None:
        asked.append(read_request(sock).split(b"\r\n", 1)[0])

    with scripted_server(close_after_reading, tls=True) as server:
        for use in ("open", "request"):  # connect() opens; a later connection is on request
            t = AttestedTlsTransport("127.0.0.1", server.port, 10, gate=PeerGate(SIM))
            with pytest.raises(NetworkError, match="did not answer"):
                t.open() if use == "open" else t.request("POST", "/run", b"secret inputs")
            t.close()
    assert asked == [b"GET /attestation HTTP/1.1"] * 2


# --- the API key ------------------------------------------------------------------------------


def test_the_api_key_goes_only_with_requests_on_an_admitted_connection():
    key = "bai_" + "k" * 43
    with attested_fake(simulated()) as fake:
        gate = PeerGate(SIM)
        t = _transport(fake, gate, keep_alive=False, api_key=key)
        t.open()
        for _ in range(2):
            t.request("POST", "/run", b"x")
        t.close()
    assert fake.attestations == 1 and fake.requests.count("POST /run") == 2
    for head in fake.heads:
        keyed = f"authorization: bearer {key}" in head.lower()
        assert keyed is (not head.startswith("GET /attestation")), head


def test_a_server_statement_too_long_to_print_is_a_policy_error():
    """The policy's [server] section against an info whose values cannot be printed (integers
    of more than 4300 digits). Before: the violation's repr() and str() raised ValueError."""
    import dataclasses

    from blindai.attestation.policy import Policy
    from blindai.attestation.server_config import ServerPolicy

    huge = 10**5000
    honest = simulated()

    def reply(cert: bytes, nonce: bytes | None) -> AttestationReply:
        info = {"access_control": True, "admin_key_sha256": "a" * 64}
        info |= {"allow_model_export": huge, "store_admin_keys": [huge, "b" * 64]}
        return dataclasses.replace(honest(cert, nonce), info=info)

    required = ServerPolicy(admin_key_sha256="a" * 64, allow_model_export=False)
    options = VerifyOptions(simulation_mode=True, policy=Policy(server=required))
    with attested_fake(reply) as fake:
        _refused(fake, PeerGate(options), PolicyError, "server.allow_model_export")
