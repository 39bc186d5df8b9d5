"""EvidenceService: the evidence it caches is for the certificate it presents, and a slow
collection (a host that stalls a quote, an NVML call that takes its time) holds up no one
who can be served the evidence already collected for that certificate."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from blindai.attestation import simulation
from blindai.attestation.binding import expected_report_data, gpu_nonce
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.nvidia_gpu._layout import parse_report
from blindai.server.attesters import ConfigfsTsmAttester
from blindai.server.attesters._quote import carried_report_data
from blindai.server.attesters.nvidia_gpu import NvidiaGpuAttester
from blindai.server.attesters.simulation import SimulationAttester
from blindai.server.evidence import EvidenceService
from blindai.server.protocols.v06.attestation import attestation_reply
from blindai.server.tls import TlsIdentity
from tests._fakes.nvidia_gpu import default_measurements, sign, unsigned_report
from tests.unit.server.attesters.attester_fakes import FakeTsmKernel, certificate_table
from tests.unit.server.attesters.test_configfs_tsm_attester import ARK, ASK, VCEK, snp_files

_T = TypeVar("_T")


def _report_data(evidence: bytes) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", simulation.SimulationModeWarning)
        claims = simulation.UnsafeSimulationVerifier().verify(
            evidence, now=datetime.now(timezone.utc)
        )
    return claims.report_data


class HeldAttester(SimulationAttester):
    """A simulation attester whose collections after the first ``free`` wait for ``release``
    (a device, or the host behind it, taking its time)."""

    def __init__(self, free: int = 1) -> None:
        super().__init__(measurement=b"\5" * 32)
        self.free = free
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def evidence(self, report_data: bytes) -> bytes:
        self.calls += 1
        if self.calls > self.free:
            self.entered.set()
            self.release.wait(30)
        return super().evidence(report_data)


class HeldNvml:
    """NVML answering with a signed SPDM report for each nonce; held like :class:`HeldAttester`."""

    def __init__(self, free: int = 0) -> None:
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.free = free
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def attestation_report(self, nonce: bytes) -> bytes:
        self.calls += 1
        if self.calls > self.free:
            self.entered.set()
            self.release.wait(30)
        return sign(unsigned_report(nonce, default_measurements()), self.key)

    def certificate_chain(self) -> bytes:
        return b"-----BEGIN CERTIFICATE-----\n"


def _in_thread(call: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def _returns_at_once(call: Callable[[], _T]) -> _T:
    """What ``call()`` returns, asserting that it returns within a second."""
    results: list[_T] = []
    thread = _in_thread(lambda: results.append(call()))
    thread.join(1.0)
    assert results, "still waiting after a second"
    return results[0]


def test_cached_evidence_follows_the_certificate():
    """Evidence cached for one certificate is never served for another (a new identity)."""
    nvml = HeldNvml(free=10)
    service = EvidenceService(TlsIdentity.generate(), SimulationAttester(), NvidiaGpuAttester(nvml))
    service.evidence()
    service.gpu_evidence()
    service.identity = TlsIdentity.generate()
    assert _report_data(service.evidence()) == expected_report_data(service.cert_der)
    gpu = service.gpu_evidence()
    assert gpu is not None
    assert parse_report(gpu["report"]).requester_nonce == gpu_nonce(service.cert_der)


def test_a_gpu_collection_does_not_hold_up_the_cpu_evidence():
    """The GPU's report and the CPU's evidence were collected under one lock: a slow NVML
    call held every GET /attestation and /quote, though their evidence was cached."""
    nvml = HeldNvml(free=0)
    service = EvidenceService(TlsIdentity.generate(), SimulationAttester(), NvidiaGpuAttester(nvml))
    cached = service.evidence()
    gpu = _in_thread(service.gpu_evidence)
    assert nvml.entered.wait(10)
    try:
        assert _returns_at_once(service.evidence) == cached
    finally:
        nvml.release.set()
        gpu.join(10)


@pytest.fixture
def due_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cached evidence is due for renewal at its next use."""
    monkeypatch.setattr("blindai.server.evidence.EVIDENCE_TTL_S", 0.0)


@pytest.mark.usefixtures("due_at_once")
def test_a_refresh_under_way_serves_the_evidence_already_collected():
    """Once the evidence is due for renewal, one caller collects it; the others get the
    evidence collected before for the same certificate at once, instead of queueing behind
    a collection that the host can stall."""
    attester = HeldAttester(free=1)
    service = EvidenceService(TlsIdentity.generate(), attester)
    first = service.evidence()
    refresh = _in_thread(service.evidence)
    assert attester.entered.wait(10)
    try:
        assert _returns_at_once(service.evidence) == first
        assert attester.calls == 2  # the waiting caller collected nothing itself
    finally:
        attester.release.set()
        refresh.join(10)
    assert _report_data(service.evidence()) == expected_report_data(service.cert_der)


@pytest.mark.usefixtures("due_at_once")
def test_a_gpu_refresh_under_way_serves_the_report_already_collected():
    nvml = HeldNvml(free=1)
    service = EvidenceService(TlsIdentity.generate(), SimulationAttester(), NvidiaGpuAttester(nvml))
    first = service.gpu_evidence()
    refresh = _in_thread(service.gpu_evidence)
    assert nvml.entered.wait(10)
    try:
        assert _returns_at_once(service.gpu_evidence) == first
    finally:
        nvml.release.set()
        refresh.join(10)


def test_evidence_for_another_certificate_is_not_served_while_a_refresh_is_under_way():
    """With no evidence yet for the current certificate, a caller waits for the collection."""
    attester = HeldAttester(free=1)
    service = EvidenceService(TlsIdentity.generate(), attester)
    service.evidence()
    service.identity = TlsIdentity.generate()
    results: list[bytes] = []
    first = _in_thread(lambda: results.append(service.evidence()))
    assert attester.entered.wait(10)
    second = _in_thread(lambda: results.append(service.evidence()))
    second.join(0.3)
    assert results == []  # both wait: nothing collected yet binds this certificate
    attester.release.set()
    first.join(10)
    second.join(10)
    expected = expected_report_data(service.cert_der)
    assert [_report_data(r) for r in results] == [expected, expected]
    assert attester.calls == 2  # one collection for the new certificate, not one each


_SNP_REPORT_DATA = slice(0x50, 0x90)  # REPORT_DATA in an SEV-SNP attestation report


def test_cached_evidence_is_served_with_the_endorsements_collected_with_it(
    evidence_dir: Path, tmp_path: Path
):
    """/attestation without a nonce sent the cached report with the endorsements of the last
    report collected, a fresh-nonce one perhaps: when the VCEK changed in between (a TCB
    update, a switch to a VLEK), clients failed verification until the next renewal. Each
    answer's evidence and certificates now come from the same collection."""
    report, vcek, ask, ark = snp_files(evidence_dir, "virtee-sev-milan")
    _, other_vcek, *_ = snp_files(evidence_dir, "go-sev-guest-milan")
    assert vcek != other_vcek
    tables = [certificate_table([(VCEK, v), (ASK, ask), (ARK, ark)]) for v in (vcek, other_vcek)]
    report_dir = tmp_path / "tsm" / "report"
    report_dir.mkdir(parents=True)

    def carrying(inblob: bytes) -> bytes:  # the real report, carrying the data written
        cut = _SNP_REPORT_DATA
        made = report[: cut.start] + inblob + report[cut.stop :]
        assert carried_report_data(EvidenceKind.SEV_SNP, made) == inblob
        return made

    # entry 0: the probe; 1: the cached report; 2 on: fresh reports, after the VCEK changed
    def table(index: int) -> bytes:
        return tables[0] if index <= 1 else tables[1]

    with FakeTsmKernel(report_dir, provider="sev_guest", outblob=carrying, auxblob=table):
        service = EvidenceService(TlsIdentity.generate(), ConfigfsTsmAttester.probe(report_dir))
        cached = attestation_reply(service, nonce=None, info={})
        fresh = attestation_reply(service, nonce=b"n" * 32, info={})
        again = attestation_reply(service, nonce=None, info={})
    assert cached.certificates == (vcek, ask, ark)
    assert fresh.certificates == (other_vcek, ask, ark)
    assert fresh.evidence != cached.evidence
    assert again.evidence == cached.evidence
    assert again.certificates == (vcek, ask, ark)  # its own, not the fresh report's
