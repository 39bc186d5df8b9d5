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
    """The certificate and fresh evidence binding it (regenerated after a minute).

    ``gpu``, when the models run on an attested GPU, gives the GPU's report for the same
    certificate (:func:`~blindai.attestation.binding.gpu_nonce`), also regenerated after a
    minute.
    """

    identity: TlsIdentity
    attester: Attester
    gpu: NvidiaGpuAttester | None = None
    metrics: Metrics | None = None
    """Where evidence refreshes are counted (``blindai_evidence_refreshes_total``)."""
    _cached: tuple[float, bytes] | None = field(default=None, init=False)
    _gpu_cached: tuple[float, dict[str, Any]] | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def cert_der(self) -> bytes:
        """The certificate every TLS port presents."""
        return self.identity.cert_der

    def evidence(self) -> bytes:
        """Evidence whose report data is SHA-256(certificate DER) followed by zeros."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > EVIDENCE_TTL_S:
                data = expected_report_data(self.identity.cert_der)
                self._cached = (now, self.attester.evidence(data))
                self._refreshed("cpu")
            return self._cached[1]

    def fresh_evidence(self, nonce: bytes) -> bytes:
        """New evidence binding the certificate and ``nonce`` (never cached: each is unique)."""
        return self.attester.evidence(expected_report_data(self.identity.cert_der, nonce=nonce))

    def gpu_evidence(self) -> dict[str, Any] | None:
        """``{"report", "certificates"}`` binding the certificate, or None without a GPU."""
        if self.gpu is None:
            return None
        with self._lock:
            now = time.monotonic()
            if self._gpu_cached is None or now - self._gpu_cached[0] > EVIDENCE_TTL_S:
                self._gpu_cached = (now, self.gpu.evidence(self.identity.cert_der))
                self._refreshed("gpu")
            return self._gpu_cached[1]

    def _refreshed(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.evidence_refreshes.labels(kind).inc()
