"""NVIDIA GPU evidence *collection*: the GPU's SPDM report through NVML, bound to the TLS key.

The GPU must be in confidential-computing mode, its driver inside the confidential VM. For the
server's certificate, :meth:`NvidiaGpuAttester.evidence` asks NVML
(``nvmlDeviceGetConfComputeGpuAttestationReport``) for a report answering the nonce
:func:`~blindai.attestation.binding.gpu_nonce` derives from that certificate, checks the report
carries it, and returns ``{"report": bytes, "certificates": [PEM chain]}`` (the chain from
``nvmlDeviceGetConfComputeGpuCertificate``), served as CBOR at ``GET /gpu-evidence``.

NVML is reached through the small :class:`Nvml` protocol: :class:`PynvmlDevice` implements it
with ``nvidia-ml-py`` (``pip install 'blindai[gpu]'``); tests give a double producing reports
signed by a generated key. Nothing here verifies: clients do.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from blindai.attestation.binding import gpu_nonce
from blindai.attestation.nvidia_gpu._layout import parse_report
from blindai.errors import ConfigurationError, EvidenceError

__all__ = ["NvidiaGpuAttester", "Nvml", "PynvmlDevice"]

_log = logging.getLogger("blindai.server")


class Nvml(Protocol):
    """The NVML calls GPU attestation needs, for one GPU."""

    def attestation_report(self, nonce: bytes) -> bytes:
        """The SPDM GET_MEASUREMENTS request || MEASUREMENTS response answering ``nonce``."""
        ...

    def certificate_chain(self) -> bytes:
        """The GPU's attestation certificate chain (PEM, leaf first)."""
        ...


class NvidiaGpuAttester:
    """Collects the GPU's report for a certificate; serialised (one NVML call at a time)."""

    def __init__(self, nvml: Nvml) -> None:
        self._nvml = nvml
        self._lock = threading.Lock()

    @classmethod
    def open(cls, index: int) -> NvidiaGpuAttester:
        """Through NVML for GPU ``index``; ConfigurationError when it cannot attest."""
        return cls(PynvmlDevice.open(index))

    def evidence(self, cert_der: bytes) -> dict[str, Any]:
        """``{"report", "certificates"}`` for ``cert_der``: the report answers its nonce."""
        nonce = gpu_nonce(cert_der)
        with self._lock:
            report = self._nvml.attestation_report(nonce)
            chain = self._nvml.certificate_chain()
        if parse_report(report).requester_nonce != nonce:
            raise EvidenceError("NVML returned a GPU report for another nonce")
        return {"report": report, "certificates": [chain]}


class PynvmlDevice:
    """:class:`Nvml` through ``nvidia-ml-py`` (module ``pynvml``) for one GPU.

    :meth:`open` initialises NVML and refuses a system whose confidential-computing feature is
    off, whose GPUs are not ready for clients, or that has no GPU at ``index``.
    """

    def __init__(self, pynvml: Any, handle: Any) -> None:
        self._nvml = pynvml
        self._handle = handle

    @classmethod
    def open(cls, index: int) -> PynvmlDevice:
        """Initialise NVML and check confidential computing; one readable error otherwise."""
        try:
            import pynvml
        except ImportError as exc:
            raise ConfigurationError(
                "GPU attestation needs nvidia-ml-py: pip install 'blindai[gpu]'"
            ) from exc
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise ConfigurationError(f"NVML is not available (no NVIDIA driver?): {exc}") from exc
        try:
            return cls(pynvml, _checked_handle(pynvml, index))
        except pynvml.NVMLError as exc:
            raise ConfigurationError(f"NVML cannot attest GPU {index}: {exc}") from exc

    def attestation_report(self, nonce: bytes) -> bytes:
        """``nvmlDeviceGetConfComputeGpuAttestationReport`` with ``nonce`` (32 bytes)."""
        try:
            out = self._nvml.nvmlDeviceGetConfComputeGpuAttestationReport(self._handle, nonce)
        except self._nvml.NVMLError as exc:
            raise EvidenceError(f"NVML gave no GPU attestation report: {exc}") from exc
        return bytes(out.attestationReport[: out.attestationReportSize])

    def certificate_chain(self) -> bytes:
        """``nvmlDeviceGetConfComputeGpuCertificate``: the attestation chain (PEM)."""
        try:
            out = self._nvml.nvmlDeviceGetConfComputeGpuCertificate(self._handle)
        except self._nvml.NVMLError as exc:
            raise EvidenceError(f"NVML gave no GPU certificate chain: {exc}") from exc
        return bytes(out.attestationCertChain[: out.attestationCertChainSize])


def _checked_handle(pynvml: Any, index: int) -> Any:
    state = pynvml.nvmlSystemGetConfComputeState()
    if state.ccFeature != pynvml.NVML_CC_SYSTEM_FEATURE_ENABLED:
        raise ConfigurationError(
            "the GPU's confidential-computing mode is off: GPU evidence would prove nothing"
        )
    if state.devToolsMode != pynvml.NVML_CC_SYSTEM_DEVTOOLS_MODE_OFF:
        _log.warning("the GPU runs in confidential-computing DEV-TOOLS mode: not for production")
    if (
        pynvml.nvmlSystemGetConfComputeGpusReadyState()
        != pynvml.NVML_CC_ACCEPTING_CLIENT_REQUESTS_TRUE
    ):
        raise ConfigurationError(
            "the GPUs do not accept work yet: set the ready state once the GPU is attested "
            "locally (nvidia-smi conf-compute -srs 1)"
        )
    count = pynvml.nvmlDeviceGetCount()
    if not 0 <= index < count:
        raise ConfigurationError(f"no GPU {index}: NVML sees {count}")
    return pynvml.nvmlDeviceGetHandleByIndex(index)
