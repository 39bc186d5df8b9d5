"""Fixtures of the NVIDIA GPU tests; the constants and the real set are in ``_gpu_kit.py``."""

from __future__ import annotations

import pytest

from blindai.attestation.nvidia_gpu import NvidiaGpuVerifier
from tests._fakes.nvidia_gpu import FakeGpu, make_fake_gpu
from tests.unit.attestation.nvidia_gpu._gpu_kit import NOW, RealSet


@pytest.fixture(scope="session")
def real() -> RealSet:
    return RealSet.load()


@pytest.fixture(scope="session")
def nvidia() -> NvidiaGpuVerifier:
    return NvidiaGpuVerifier.with_embedded_roots()


@pytest.fixture(scope="session")
def gpu() -> FakeGpu:
    return make_fake_gpu(NOW)


@pytest.fixture(scope="session")
def test_verifier(gpu: FakeGpu) -> NvidiaGpuVerifier:
    return NvidiaGpuVerifier(trusted_root_fingerprints=[gpu.root_fingerprint])
