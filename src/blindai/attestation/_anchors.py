"""Vendor roots, pinned by the SHA-256 of their DER encoding.

The roots themselves travel with the evidence (quote certification data, the SNP certificate
table or KDS answer, the Nitro cabundle, the GPU's NVML chain); a verifier accepts a chain only
when its root's fingerprint is one of these. Values from ``tests/data/evidence/README.md``,
identical across independent public repositories. ``NVIDIA_DEVICE_IDENTITY_CA`` is also the
SHA-256 of NVIDIA/nvtrust's ``verifier/certs/verifier_device_root.pem``; ``NVIDIA_RIM_ROOT``
(``CN=NVIDIA CoRIM signing Root CA``, P-384, 2023-03-16 .. 2053-03-08) that of its
``verifier_RIM_root.pem``, the root ending the chain in NVIDIA's published RIM files.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "AMD_ARK_GENOA",
    "AMD_ARK_MILAN",
    "AWS_NITRO_ROOT",
    "INTEL_SGX_ROOT_CA",
    "NVIDIA_DEVICE_IDENTITY_CA",
    "NVIDIA_RIM_ROOT",
    "fingerprint",
]

INTEL_SGX_ROOT_CA = bytes.fromhex(
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
)
AMD_ARK_MILAN = bytes.fromhex("69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd")
AMD_ARK_GENOA = bytes.fromhex("4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1")
AWS_NITRO_ROOT = bytes.fromhex("641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b")
NVIDIA_DEVICE_IDENTITY_CA = bytes.fromhex(
    "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"
)
NVIDIA_RIM_ROOT = bytes.fromhex("12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1")


def fingerprint(cert_der: bytes) -> bytes:
    """SHA-256 of a certificate's DER encoding."""
    return hashlib.sha256(cert_der).digest()
