"""Simulated evidence: marked, parsed strictly, never accepted silently."""

from __future__ import annotations

from datetime import datetime, timezone

import cbor2
import pytest

from blindai.attestation import check_binding, expected_report_data, simulation
from blindai.errors import BindingError, EvidenceError, PolicyError
from blindai.server.attesters.simulation import SimulationAttester, measure_code
from blindai.server.tls import TlsIdentity

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
GOOD = {"version": 1, "measurement": bytes(32), "report_data": bytes(64), "server_version": "1"}


def test_attester_output_verifies_binds_and_warns():
    cert = TlsIdentity.generate().cert_der
    attester = SimulationAttester()
    evidence = attester.evidence(expected_report_data(cert))
    assert evidence.startswith(simulation.MAGIC)
    with pytest.warns(simulation.SimulationModeWarning):
        claims = simulation.UnsafeSimulationVerifier().verify(evidence, now=NOW)
    assert claims.debug is True
    assert claims.measurement == measure_code()
    check_binding(cert, report_data=claims.report_data)
    with pytest.raises(BindingError):
        check_binding(TlsIdentity.generate().cert_der, report_data=claims.report_data)


def test_expected_measurement_is_enforced():
    evidence = SimulationAttester(measurement=b"\1" * 32).evidence(b"\0" * 64)
    verifier = simulation.UnsafeSimulationVerifier(expected_measurement=b"\2" * 32)
    with pytest.warns(simulation.SimulationModeWarning), pytest.raises(PolicyError) as info:
        verifier.verify(evidence, now=NOW)
    assert info.value.violations[0].field == "measurement"


@pytest.mark.parametrize(
    "evidence",
    [
        b"",
        b"\x03\x00\x02\x00" + b"\0" * 100,
        simulation.MAGIC + b"\xff\xff",
        simulation.MAGIC + b"\xa1\x67version\x02",
        *(
            simulation.MAGIC + cbor2.dumps({**GOOD, field: value})
            for field, value in (
                ("measurement", b"short"),
                ("report_data", "not bytes"),
                ("server_version", 1),
            )
        ),
    ],
)
def test_malformed_documents(evidence):
    with pytest.raises(EvidenceError):
        simulation.decode(evidence)


def test_measure_code_changes_with_the_code(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    first = measure_code(tmp_path)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert measure_code(tmp_path) != first


def test_the_well_formed_document_the_malformed_ones_start_from():
    doc = simulation.decode(simulation.MAGIC + cbor2.dumps(GOOD))
    assert (doc.measurement, doc.server_version) == (bytes(32), "1")


def test_costly_cbor_is_refused_at_once():
    """The document comes from a server nobody verified: it is decoded as such (text or byte
    map keys, no semantic tags). Before: plain cbor2 built a map of 30,000 integer keys sharing
    one hash in 5 s (quadratic: the 4 MiB an attestation reply may hold took ten minutes)."""
    import time

    from blindai.protocol.streaming import head

    p61 = (1 << 61) - 1  # every multiple of it hashes to 0 in CPython
    colliding = head(5, 30_000) + b"".join(cbor2.dumps(k * p61) + b"\0" for k in range(1, 30_001))
    rational = cbor2.dumps({**GOOD, "server_version": cbor2.CBORTag(30, [10**400, 3])})
    for body in (colliding, rational):
        start = time.monotonic()
        with pytest.raises(EvidenceError, match="not valid CBOR"):
            simulation.decode(simulation.MAGIC + body)
        assert time.monotonic() - start < 1.0
