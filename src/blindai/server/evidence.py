"""The server's certificate and the fresh evidence binding it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from blindai.attestation.binding import expected_report_data
from blindai.server.attesters.base import Attester
from blindai.server.attesters.nvidia_gpu import NvidiaGpuAttester
from blindai.server.metrics import Metrics
from blindai.server.tls import TlsIdentity

__all__ = ["EVIDENCE_TTL_S", "EvidenceService"]

EVIDENCE_TTL_S = 60.0

_T = TypeVar("_T")


class _Cached(Generic[_T]):
    """One kind of evidence: the last collected, for which certificate and when.

    One caller at a time collects. While it does, the others get the evidence collected
    before for the same certificate at once (it binds that certificate as well, a minute or
    so older), rather than queue behind a collection that the host can stall (a TDX quote
    goes through the host's quoting service); with none for this certificate, they wait.
    """

    def __init__(self) -> None:
        self._value: tuple[bytes, float, _T] | None = None
        self._collecting = threading.Lock()

    def get(self, cert: bytes, collect: Callable[[bytes], _T], refreshed: Callable[[], None]) -> _T:
        """Evidence for ``cert``: the cached one while current, else ``collect(cert)``'s."""
        held = self._value  # replaced whole, read without a lock
        if held is not None and held[0] == cert and _young(held[1]):
            return held[2]
        previous = held[2] if held is not None and held[0] == cert else None
        if previous is None:
            self._collecting.acquire()
        elif not self._collecting.acquire(blocking=False):
            return previous
        try:
            held = self._value  # a collection may have ended while this caller waited
            if held is not None and held[0] == cert and _young(held[1]):
                return held[2]
            now = time.monotonic()
            value = collect(cert)
            self._value = (cert, now, value)
            refreshed()
            return value
        finally:
            self._collecting.release()


def _young(collected: float) -> bool:
    return time.monotonic() - collected <= EVIDENCE_TTL_S


@dataclass
class EvidenceService:
    """The certificate and fresh evidence binding it (regenerated after a minute, and for
    another certificate at once: what is cached is served for its own certificate only).

    ``gpu``, when the models run on an attested GPU, gives the GPU's report for the same
    certificate (:func:`~blindai.attestation.binding.gpu_nonce`), also regenerated after a
    minute. The CPU's and the GPU's are collected apart: neither waits for the other; while
    one is being renewed, the one collected before is served (see :class:`_Cached`).
    """

    identity: TlsIdentity
    attester: Attester
    gpu: NvidiaGpuAttester | None = None
    metrics: Metrics | None = None
    """Where evidence refreshes are counted (``blindai_evidence_refreshes_total``)."""
    _cpu: _Cached[bytes] = field(default_factory=_Cached, init=False)
    _gpu: _Cached[dict[str, Any]] = field(default_factory=_Cached, init=False)

    @property
    def cert_der(self) -> bytes:
        """The certificate every TLS port presents."""
        return self.identity.cert_der

    def evidence(self) -> bytes:
        """Evidence whose report data is SHA-256(certificate DER) followed by zeros."""
        return self._cpu.get(
            self.identity.cert_der,
            lambda cert: self.attester.evidence(expected_report_data(cert)),
            lambda: self._refreshed("cpu"),
        )

    def fresh_evidence(self, nonce: bytes) -> bytes:
        """New evidence binding the certificate and ``nonce`` (never cached: each is unique)."""
        return self.attester.evidence(expected_report_data(self.identity.cert_der, nonce=nonce))

    def gpu_evidence(self) -> dict[str, Any] | None:
        """``{"report", "certificates"}`` binding the certificate, or None without a GPU."""
        gpu = self.gpu
        if gpu is None:
            return None
        return self._gpu.get(self.identity.cert_der, gpu.evidence, lambda: self._refreshed("gpu"))

    def _refreshed(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.evidence_refreshes.labels(kind).inc()
