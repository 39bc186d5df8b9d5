"""The server's certificate and the fresh evidence binding it, each with its endorsements.

An attester's ``endorsements()`` are those of its *last* collection (an SNP report's
``auxblob`` certificates, the collateral of a TDX or SGX quote). The service asks for them
right after the evidence, with no other collection in between (:class:`Collected`), and keeps
them together: cached evidence is served with the endorsements collected with it, fresh
evidence with its own. It served the cached evidence with the endorsements of whatever was
collected last, a fresh-nonce report perhaps: after a VCEK change (a TCB update, a switch to
a VLEK) clients failed verification until the next renewal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from blindai.attestation.binding import expected_report_data
from blindai.attestation.endorsements import Endorsements
from blindai.errors import CollateralUnavailable
from blindai.server.attesters.base import Attester
from blindai.server.attesters.nvidia_gpu import NvidiaGpuAttester
from blindai.server.metrics import Metrics
from blindai.server.tls import TlsIdentity

__all__ = ["EVIDENCE_TTL_S", "Collected", "EvidenceService"]

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


@dataclass(frozen=True)
class Collected:
    """Evidence and the endorsements collected with it (see the module)."""

    evidence: bytes
    found: Endorsements | None
    """The endorsements; None when they could not be had (``missing`` says why)."""
    missing: CollateralUnavailable | None = None

    def endorsements(self) -> Endorsements:
        """The endorsements collected with the evidence; :class:`CollateralUnavailable` when
        they could not be had then (the evidence is still served alone, as on ``/quote``)."""
        if self.found is None:
            raise self.missing or CollateralUnavailable("no endorsements were collected")
        return self.found


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
    _cpu: _Cached[Collected] = field(default_factory=_Cached, init=False)
    _gpu: _Cached[dict[str, Any]] = field(default_factory=_Cached, init=False)
    _collecting: threading.Lock = field(default_factory=threading.Lock, init=False)
    """Held from an evidence collection to its endorsements: no other collection between."""

    @property
    def cert_der(self) -> bytes:
        """The certificate every TLS port presents."""
        return self.identity.cert_der

    def evidence(self) -> bytes:
        """Evidence whose report data is SHA-256(certificate DER) followed by zeros."""
        return self.collected().evidence

    def collected(self) -> Collected:
        """:meth:`evidence` with the endorsements collected with it."""
        return self._cpu.get(
            self.identity.cert_der,
            lambda cert: self._collect(expected_report_data(cert)),
            lambda: self._refreshed("cpu"),
        )

    def fresh(self, nonce: bytes) -> Collected:
        """New evidence binding the certificate and ``nonce`` (never cached: each is unique),
        with the endorsements collected with it."""
        return self._collect(expected_report_data(self.identity.cert_der, nonce=nonce))

    def _collect(self, report_data: bytes) -> Collected:
        with self._collecting:
            evidence = self.attester.evidence(report_data)
            try:
                return Collected(evidence, self.attester.endorsements())
            except CollateralUnavailable as exc:
                return Collected(evidence, None, exc)

    def gpu_evidence(self) -> dict[str, Any] | None:
        """``{"report", "certificates"}`` binding the certificate, or None without a GPU."""
        gpu = self.gpu
        if gpu is None:
            return None
        return self._gpu.get(self.identity.cert_der, gpu.evidence, lambda: self._refreshed("gpu"))

    def _refreshed(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.evidence_refreshes.labels(kind).inc()
