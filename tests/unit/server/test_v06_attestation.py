"""``GET /attestation`` on both TLS apps, in process (httpx's ASGI transport)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import cbor2
import httpx
import pytest
from starlette.applications import Starlette

from blindai.attestation import simulation
from blindai.attestation._collateral import PcsCollateralSource
from blindai.attestation.binding import check_binding
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.endorsements import Endorsements
from blindai.errors import BindingError
from blindai.protocol.attestation import decode_reply
from blindai.server._workers import WorkerPool
from blindai.server.attesters.gramine import GramineAttester
from blindai.server.attesters.simulation import SimulationAttester
from blindai.server.evidence import EvidenceService
from blindai.server.protocols.v06 import FreshEvidenceLimit, attestation_route
from blindai.server.protocols.v06.attestation import FreshEvidenceRefused
from blindai.server.settings import ServerSettings
from blindai.server.tls import TlsIdentity
from tests.unit.attestation.pcs_fakes import FakeFetcher
from tests.unit.server._inprocess import in_process

NONCE = bytes(range(100, 132))


class EndorsedAttester(SimulationAttester):
    """A simulation attester that also hands out endorsements, can fail, and can be held."""

    fail = False

    def __init__(self) -> None:
        super().__init__(measurement=b"\7" * 32)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def endorsements(self) -> Endorsements:
        return Endorsements(b'{"tcb_info": "..."}', (b"vcek", b"ask"))

    def evidence(self, report_data: bytes) -> bytes:
        self.entered.set()
        self.release.wait(30)
        if self.fail:
            raise RuntimeError("device failure")
        return super().evidence(report_data)


def _claims(evidence: bytes) -> simulation.SimulationClaims:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", simulation.SimulationModeWarning)
        return simulation.UnsafeSimulationVerifier().verify(
            evidence, now=datetime.now(timezone.utc)
        )


@pytest.mark.parametrize("app", ["attested", "management"])
def test_reply_carries_the_cached_evidence_for_this_certificate(app: str):
    with in_process() as p:
        p.service.attester = EndorsedAttester()
        resp = getattr(p, app).get("/attestation")
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/cbor"
        reply = decode_reply(resp.content)
        assert reply.kind == EvidenceKind.SIMULATION.value
        assert reply.certificate == p.service.cert_der
        assert reply.evidence == p.service.evidence()
        assert reply.nonce is None
        assert reply.collateral == b'{"tcb_info": "..."}'
        assert reply.certificates == (b"vcek", b"ask")
        assert reply.info["tee"] == "simulation" and "attestation" in reply.info["capabilities"]
        check_binding(p.service.cert_der, report_data=_claims(reply.evidence).report_data)


def test_unattested_port_serves_no_attestation_route():
    """The route answers for the TLS connection's certificate: on TLS ports only."""
    with in_process() as p:
        assert p.unattested.get("/attestation").status_code == 404


def test_a_nonce_gets_new_evidence_binding_it():
    with in_process() as p:
        resp = p.attested.get("/attestation", params={"nonce": NONCE.hex()})
        assert resp.status_code == 200
        reply = decode_reply(resp.content)
        assert reply.nonce == NONCE
        data = _claims(reply.evidence).report_data
        check_binding(p.service.cert_der, report_data=data, nonce=NONCE)
        with pytest.raises(BindingError):
            check_binding(p.service.cert_der, report_data=data, nonce=bytes(32))


@pytest.mark.parametrize(
    "nonce",
    [
        "ab" * 15,  # 15 bytes: too short
        "ab" * 65,  # too long
        "a" * 33,  # odd number of digits
        "zz" * 16,  # not hex
        "ab" * 15 + " a",  # bytes.fromhex would skip the space
        "",
    ],
)
def test_malformed_nonces_are_400(nonce: str):
    with in_process() as p:
        resp = p.attested.get("/attestation", params={"nonce": nonce})
    assert resp.status_code == 400
    assert resp.headers["x-blindai-error"] == "ProtocolError"
    assert "nonce" in cbor2.loads(resp.content)


def test_fresh_requests_beyond_the_limit_are_503_at_once():
    """One collection held in the attester: a second fresh request is refused, not queued;
    cached evidence is still served; once released, the first completes."""
    attester = EndorsedAttester()
    service = EvidenceService(TlsIdentity.generate(), attester)
    service.evidence()  # cached before the attester is held
    workers = WorkerPool(2, name="test-evidence")
    limit = FreshEvidenceLimit(1)
    app = Starlette(routes=[attestation_route(service, workers, info=dict, limit=limit)])

    async def scenario() -> tuple[int, int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://app") as client:
            attester.release.clear()
            attester.entered.clear()
            first = asyncio.create_task(client.get(f"/attestation?nonce={NONCE.hex()}"))
            await asyncio.to_thread(attester.entered.wait, 30)
            second = await client.get(f"/attestation?nonce={NONCE.hex()}")
            attester.release.set()
            cached = await client.get("/attestation")
            return (await first).status_code, second.status_code, cached.status_code

    try:
        first, second, cached = asyncio.run(scenario())
    finally:
        attester.release.set()
        workers.close()
    assert (first, second, cached) == (200, 503, 200)
    assert limit.pending == 0


def test_a_failed_collection_gives_its_place_back():
    attester = EndorsedAttester()
    service = EvidenceService(TlsIdentity.generate(), attester)
    workers = WorkerPool(1, name="test-evidence")
    limit = FreshEvidenceLimit(1)
    app = Starlette(routes=[attestation_route(service, workers, info=dict, limit=limit)])
    attester.fail = True

    async def ask() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://app") as client:
            return (await client.get(f"/attestation?nonce={NONCE.hex()}")).status_code

    try:
        assert asyncio.run(ask()) == 500
    finally:
        workers.close()
    assert limit.pending == 0


def test_limit_must_allow_one():
    with pytest.raises(ValueError):
        FreshEvidenceLimit(0)


def test_a_device_that_never_answers_is_503_each_time_not_a_hang(tmp_path: Path):
    """A host's attestation device that takes no report data (a FIFO nobody reads): each
    collection is given up at the attester's I/O timeout, with its lock, and answered 503."""
    device = tmp_path / "attestation"
    device.mkdir()
    (device / "attestation_type").write_text("dcap\n")
    os.mkfifo(device / "user_report_data")
    (device / "quote").write_bytes(b"")
    with in_process() as p:
        p.service.attester = GramineAttester(device, collateral=None, io_timeout=0.05)
        for _ in range(2):
            resp = p.attested.get("/attestation", params={"nonce": NONCE.hex()})
            assert resp.status_code == 503
            assert resp.headers["x-blindai-error"] == "EvidenceError"
            assert "no answer in time" in cbor2.loads(resp.content)
        assert p.unattested.get("/quote").status_code == 503
        assert p.unattested.get("/").status_code == 200


class PcsEndorsedAttester(SimulationAttester):
    """Simulated evidence; SGX collateral for a real quote from a real PcsCollateralSource, as
    GramineAttester serves it (its own quote cannot carry this test's certificate)."""

    def __init__(self, quote: bytes, source: PcsCollateralSource) -> None:
        super().__init__(measurement=b"\7" * 32)
        self.quote, self.source = quote, source

    def endorsements(self) -> Endorsements:
        return Endorsements(collateral=self.source.for_quote(self.quote).to_json())


def test_anonymous_requests_while_the_pcs_fails_cost_one_fetch(sgx_set: Path):
    """The unattested port fetches collateral for anyone who asks: while the PCS failed, each
    anonymous request cost an evidence worker a whole fetch (up to a minute against a PCS that
    drips), and the attested port's /attestation waited behind them."""
    pcs = FakeFetcher({})  # the PCS answers 404 to everything
    source = PcsCollateralSource(pcs)
    with in_process() as p:
        p.service.attester = PcsEndorsedAttester((sgx_set / "quote.bin").read_bytes(), source)
        for _ in range(10):
            resp = p.unattested.get("/endorsements")
            assert resp.status_code == 503
            assert resp.headers["x-blindai-error"] == "CollateralUnavailable"
        # the endorsements of the cached evidence were not had when it was collected: that
        # collection's reason, until the evidence is renewed (EVIDENCE_TTL_S)
        resp = p.attested.get("/attestation")
        assert resp.status_code == 503 and "fake PCS: 404" in cbor2.loads(resp.content)
    assert len(pcs.asked) == 1


class CountingAttester(SimulationAttester):
    """A simulation attester counting the reports it makes (each a TEE's quote or report)."""

    def __init__(self) -> None:
        super().__init__(measurement=b"\3" * 32)
        self.reports = 0

    def evidence(self, report_data: bytes) -> bytes:
        self.reports += 1
        return super().evidence(report_data)


def test_fresh_evidence_is_rate_limited_while_others_are_served():
    """Fresh evidence had a cap on collections in progress (4) but none on their rate:
    anonymous clients could keep the TEE making reports back to back. Now at most
    fresh_evidence_per_second start a second; beyond, 503 ServerBusy with Retry-After and a
    message, while cached evidence and the other routes are still served."""
    attester = CountingAttester()
    with in_process(fresh_evidence_per_second=0.2) as p:  # one, then one every 5 s
        p.service.attester = attester
        statuses = []
        for i in range(10):
            resp = p.attested.get("/attestation", params={"nonce": bytes([i] * 32).hex()})
            statuses.append(resp.status_code)
            if resp.status_code == 503:
                assert resp.headers["x-blindai-error"] == "ServerBusy"
                assert 1 <= int(resp.headers["retry-after"]) <= 5
                assert "fresh_evidence_per_second" in cbor2.loads(resp.content)
        assert statuses == [200] + [503] * 9
        assert attester.reports == 1
        assert p.attested.get("/attestation").status_code == 200  # cached evidence: served
        assert p.unattested.get("/").status_code == 200
    assert attester.reports == 2  # the cached evidence's


def test_the_default_fresh_evidence_rate_bounds_the_reports_made():
    """With the default settings, 40 fresh-evidence requests in a row made 40 reports."""
    attester = CountingAttester()
    with in_process() as p:
        p.service.attester = attester
        start = time.monotonic()
        for i in range(40):
            p.attested.get("/attestation", params={"nonce": bytes([i] * 32).hex()})
        elapsed = time.monotonic() - start
        rate = ServerSettings(tee="simulation").fresh_evidence_per_second
        assert attester.reports <= rate + elapsed * rate + 1, (attester.reports, elapsed)


def test_the_fresh_evidence_rate_refills_over_time():
    now = [0.0]
    limit = FreshEvidenceLimit(4, per_second=2, clock=lambda: now[0])
    for _ in range(2):  # a second's worth at once
        limit.enter()
        limit.leave()
    with pytest.raises(FreshEvidenceRefused) as refused:
        limit.enter()
    assert refused.value.retry_after_s == pytest.approx(0.5)
    assert limit.pending == 0
    now[0] = 0.5
    limit.enter()  # one more after half a second
    with pytest.raises(FreshEvidenceRefused):
        limit.enter()
    now[0] = 100.0  # a quiet spell refills one second's worth, no more
    for _ in range(2):
        limit.enter()
        limit.leave()
    with pytest.raises(FreshEvidenceRefused):
        limit.enter()
