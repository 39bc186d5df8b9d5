"""The GPU attester: reports bound to the certificate's nonce, NVML refusals in one line.

:class:`FakeNvml` (tests/_fakes/gpu_server.py) plays a GPU in confidential-computing mode;
``FakePynvml`` plays the ``pynvml`` module for the checks :meth:`PynvmlDevice.open` makes,
with the real module's constants and ctypes structures. On this machine the real
``nvidia-ml-py`` finds no driver, which is the first refusal tested.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pynvml
import pytest

from blindai.attestation import Endorsements
from blindai.attestation.binding import GPU_NONCE_LABEL, gpu_nonce
from blindai.attestation.nvidia_gpu import NvidiaGpuPolicy, NvidiaGpuVerifier
from blindai.errors import ConfigurationError, EvidenceError
from blindai.server.attesters import NvidiaGpuAttester, PynvmlDevice
from tests._fakes.gpu_server import FakeNvml, save_gpu
from tests._fakes.nvidia_gpu import FakeGpu, make_fake_gpu

CERT = b"0\x82 a certificate's DER"


@pytest.fixture(scope="module")
def gpu() -> FakeGpu:
    return make_fake_gpu()


@pytest.fixture
def nvml(tmp_path: Path, gpu: FakeGpu) -> FakeNvml:
    save_gpu(gpu, tmp_path)
    return FakeNvml(tmp_path)


def test_gpu_nonce_definition() -> None:
    digest = hashlib.sha256(CERT).digest()
    assert gpu_nonce(CERT) == hashlib.sha256(b"blindai-gpu-nonce" + digest).digest()
    assert GPU_NONCE_LABEL == b"blindai-gpu-nonce" and len(gpu_nonce(CERT)) == 32
    assert gpu_nonce(CERT) != digest


def test_evidence_answers_the_certificates_nonce(nvml: FakeNvml, gpu: FakeGpu) -> None:
    evidence = NvidiaGpuAttester(nvml).evidence(CERT)
    assert set(evidence) == {"report", "certificates"}
    claims = NvidiaGpuVerifier(trusted_root_fingerprints=[gpu.root_fingerprint]).verify(
        evidence["report"], NvidiaGpuPolicy(allow_any_measurement=True),
        now=datetime.now(timezone.utc),
        endorsements=Endorsements(certificates=tuple(evidence["certificates"])),
        expected_nonce=gpu_nonce(CERT),
    )  # fmt: skip
    assert claims.nonce == gpu_nonce(CERT)


def test_a_report_for_another_nonce_is_refused(nvml: FakeNvml, gpu: FakeGpu) -> None:
    nvml.directory.joinpath("replay").write_bytes(gpu.report(bytes(32)))
    with pytest.raises(EvidenceError, match="another nonce"):
        NvidiaGpuAttester(nvml).evidence(CERT)


def test_no_driver_here() -> None:
    with pytest.raises(ConfigurationError, match="NVML is not available"):
        PynvmlDevice.open(0)
    with pytest.raises(ConfigurationError, match="NVML is not available"):
        NvidiaGpuAttester.open(0)


class FakePynvml:
    """The ``pynvml`` calls PynvmlDevice makes, on a GPU in the given state."""

    NVMLError = pynvml.NVMLError
    NVML_CC_SYSTEM_FEATURE_ENABLED = pynvml.NVML_CC_SYSTEM_FEATURE_ENABLED
    NVML_CC_SYSTEM_DEVTOOLS_MODE_OFF = pynvml.NVML_CC_SYSTEM_DEVTOOLS_MODE_OFF
    NVML_CC_ACCEPTING_CLIENT_REQUESTS_TRUE = pynvml.NVML_CC_ACCEPTING_CLIENT_REQUESTS_TRUE

    def __init__(self, *, cc: int = 1, devtools: int = 0, ready: int = 1, count: int = 1) -> None:
        self.cc, self.devtools, self.ready, self.count = cc, devtools, ready, count
        self.report = b""
        self.chain = b""

    def nvmlSystemGetConfComputeState(self) -> Any:
        return pynvml.c_nvmlConfComputeSystemState_t(2, self.cc, self.devtools)

    def nvmlSystemGetConfComputeGpusReadyState(self) -> int:
        return self.ready

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"handle {index}"

    def nvmlDeviceGetConfComputeGpuAttestationReport(self, handle: str, nonce: bytes) -> Any:
        if not self.report:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        out = pynvml.c_nvmlConfComputeGpuAttestationReport_t()
        out.attestationReportSize = len(self.report)
        out.attestationReport[: len(self.report)] = list(self.report)
        return out

    def nvmlDeviceGetConfComputeGpuCertificate(self, handle: str) -> Any:
        if not self.chain:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        out = pynvml.c_nvmlConfComputeGpuCertificate_t()
        out.attestationCertChainSize = len(self.chain)
        out.attestationCertChain[: len(self.chain)] = list(self.chain)
        return out


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"cc": 0}, "confidential-computing mode is off"),
        ({"ready": 0}, "ready state"),
        ({"count": 0}, "no GPU 0"),
    ],
)
def test_gpu_state_refusals(state: dict[str, int], match: str) -> None:
    from blindai.server.attesters.nvidia_gpu import _checked_handle

    with pytest.raises(ConfigurationError, match=match):
        _checked_handle(FakePynvml(**state), 0)


def test_devtools_mode_warns(caplog: pytest.LogCaptureFixture) -> None:
    from blindai.server.attesters.nvidia_gpu import _checked_handle

    assert _checked_handle(FakePynvml(devtools=1), 0) == "handle 0"
    assert "DEV-TOOLS" in caplog.text


def test_reads_the_structures_nvml_fills(gpu: FakeGpu) -> None:
    fake = FakePynvml()
    device = PynvmlDevice(fake, "handle 0")
    with pytest.raises(EvidenceError, match="no GPU attestation report"):
        device.attestation_report(bytes(32))
    with pytest.raises(EvidenceError, match="no GPU certificate chain"):
        device.certificate_chain()
    fake.report, fake.chain = gpu.report(bytes(32)), gpu.chain_pem()
    assert device.attestation_report(bytes(32)) == fake.report
    assert device.certificate_chain() == fake.chain
