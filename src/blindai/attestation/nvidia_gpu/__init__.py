"""NVIDIA GPU confidential computing: verify SPDM attestation reports against NVIDIA's roots.

A GPU in confidential-computing mode (H100, H200, ...) answers an SPDM ``GET_MEASUREMENTS``
with measurement blocks, driver and VBIOS versions, signed by a per-boot leaf key whose chain
ends at the NVIDIA Device Identity CA (pinned by SHA-256). The chain travels with the report
in :class:`~blindai.attestation.Endorsements` (the PEM NVML returns). Optionally, a policy
names NVIDIA reference integrity manifests (RIMs) to compare against, verified offline.
Nothing is fetched: no OCSP, no RIM service.

Example::

    from datetime import datetime, timezone
    from blindai.attestation import Endorsements
    from blindai.attestation.nvidia_gpu import NvidiaGpuPolicy, NvidiaGpuVerifier

    policy = NvidiaGpuPolicy.from_mapping({"min_driver_version": "550.90.07",
                                           "measurements": {"2": "8048dfd1...a338"}})
    claims = NvidiaGpuVerifier.with_embedded_roots().verify(
        report, policy, now=datetime.now(timezone.utc),
        endorsements=Endorsements(certificates=(chain_pem,)), expected_nonce=nonce,
    )
    print(claims.model, claims.driver_version, claims.measurements[2].hex())
"""

from __future__ import annotations

from blindai.attestation.nvidia_gpu._claims import NvidiaGpuClaims
from blindai.attestation.nvidia_gpu.policy import NvidiaGpuPolicy
from blindai.attestation.nvidia_gpu.verifier import NvidiaGpuVerifier

__all__ = ["NvidiaGpuClaims", "NvidiaGpuPolicy", "NvidiaGpuVerifier"]
