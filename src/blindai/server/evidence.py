"""The server's certificate and the fresh evidence binding it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from blindai.attestation.binding import expected_report_data
from blindai.server.attesters.base import Attester
from blindai.server.attesters.nvidia_gpu import NvidiaGpuAttester
from blindai.server.metrics import Metrics
from blindai.server.tls import TlsIdentity

__all__ = ["EVIDENCE_TTL_S", "EvidenceService"]

EVIDENCE_TTL_S = 60.0


@dataclass
class EvidenceService:
    """The certificate and fresh evidence binding it (regenerated after a minute, and for
    another certificate at once: what is cached is served for its own certificate only).

    ``gpu``, when the models run on an attested GPU, gives the GPU's report for the same
    certificate (:func:`~blindai.attestation.binding.gpu_nonce`), also regenerated after a
    minute.
    """

    identity: TlsIdentity
    attester: Attester
    gpu: NvidiaGpuAttester | None = None
    metrics: Metrics | None = None
    """Where evidence refreshes are counted (``blindai_evidence_refreshes_total``)."""
    _cached: tuple[bytes, float, bytes] | None = field(default=None, init=False)
    """(certificate, when collected, evidence): evidence is served for that certificate only."""
    _gpu_cached: tuple[bytes, float, dict[str, Any]] | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def cert_der(self) -> bytes:
        """The certificate every TLS port presents."""
        return self.identity.cert_der

    def evidence(self) -> bytes:
        """Evidence whose report data is SHA-256(certificate DER) followed by zeros."""
        with self._lock:
            now, cert = time.monotonic(), self.identity.cert_der
            if not _current(self._cached, cert, now):
                data = expected_report_data(cert)
                self._cached = (cert, now, self.attester.evidence(data))
                self._refreshed("cpu")
            assert self._cached is not None
            return self._cached[2]

    def fresh_evidence(self, nonce: bytes) -> bytes:
        """New evidence binding the certificate and ``nonce`` (never cached: each is unique)."""
        return self.attester.evidence(expected_report_data(self.identity.cert_der, nonce=nonce))

    def gpu_evidence(self) -> dict[str, Any] | None:
        """``{"report", "certificates"}`` binding the certificate, or None without a GPU."""
        if self.gpu is None:
            return None
        with self._lock:
            now, cert = time.monotonic(), self.identity.cert_der
            if not _current(self._gpu_cached, cert, now):
                self._gpu_cached = (cert, now, self.gpu.evidence(cert))
                self._refreshed("gpu")
            assert self._gpu_cached is not None
            return self._gpu_cached[2]

    def _refreshed(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.evidence_refreshes.labels(kind).inc()


def _current(cached: tuple[bytes, float, object] | None, cert: bytes, now: float) -> bool:
    """Whether ``cached`` binds ``cert`` and is younger than :data:`EVIDENCE_TTL_S`."""
    return cached is not None and cached[0] == cert and now - cached[1] <= EVIDENCE_TTL_S
