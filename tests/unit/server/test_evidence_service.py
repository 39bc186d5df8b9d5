"""EvidenceService: the evidence it caches is for the certificate it presents, and a slow
collection (a host that stalls a quote, an NVML call that takes its time) holds up no one
who can be served the evidence already collected for that certificate."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from blindai.attestation import simulation
from blindai.attestation.binding import expected_report_data, gpu_nonce
from blindai.attestation.nvidia_gpu._layout import parse_report
from blindai.server.attesters.nvidia_gpu import NvidiaGpuAttester
from blindai.server.attesters.simulation import SimulationAttester
from blindai.server.evidence import EvidenceService
from blindai.server.tls import TlsIdentity
from tests._fakes.nvidia_gpu import default_measurements, sign, unsigned_report

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
