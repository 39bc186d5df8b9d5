"""Vendor roots, pinned by the SHA-256 of their DER encoding.

The roots themselves travel with the evidence (quote certification data, the SNP certificate
table or KDS answer, the Nitro cabundle); a verifier accepts a chain only when its root's
fingerprint is one of these. Values from ``../shared/evidence/README.md``, identical across
independent public repositories.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "AMD_ARK_GENOA",
    "AMD_ARK_MILAN",
    "AWS_NITRO_ROOT",
    "INTEL_SGX_ROOT_CA",
    "fingerprint",
]

INTEL_SGX_ROOT_CA = bytes.fromhex(
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
)
AMD_ARK_MILAN = bytes.fromhex("69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd")
AMD_ARK_GENOA = bytes.fromhex("4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1")
AWS_NITRO_ROOT = bytes.fromhex("641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b")


def fingerprint(cert_der: bytes) -> bytes:
    """SHA-256 of a certificate's DER encoding."""
    return hashlib.sha256(cert_der).digest()
