"""Verified NVIDIA GPU claims; only :class:`~blindai.attestation.nvidia_gpu.NvidiaGpuVerifier`
builds them."""

from __future__ import annotations

from dataclasses import dataclass

from blindai.attestation.claims import VerifiedClaims

__all__ = ["NvidiaGpuClaims"]


@dataclass(frozen=True, kw_only=True)
class NvidiaGpuClaims(VerifiedClaims):
    """What an authentic NVIDIA GPU attestation report (SPDM MEASUREMENTS) says.

    ``measurements`` maps the SPDM block index (1-based, as NVIDIA's tools print them) to the
    measurement value. ``measurement`` is the SHA-384 of the whole signed measurement record,
    one value that changes when any block does. ``report_data`` and ``nonce`` are the
    requester's 32-byte nonce (the binding); ``responder_nonce`` is the GPU's. ``debug`` is
    always false: the SPDM report carries no debug flag (the confidential-computing dev-tools
    mode is an NVML setting the report does not attest). ``model`` and ``device_id`` come from
    the leaf certificate's ``NVIDIA:<model>:<id>`` name (None when it has none); ``chain`` is
    every certificate's subject, leaf first; ``certificate`` the leaf's DER. ``opaque`` holds
    every OpaqueData item as raw bytes by NVIDIA's field name.
    """

    measurements: dict[int, bytes]
    driver_version: str
    vbios_version: str
    nonce: bytes
    responder_nonce: bytes
    fwid: bytes | None
    nvdec0_status: str | None
    measurement_count: dict[int, int]
    opaque: dict[str, bytes]
    model: str | None
    device_id: str | None
    chain: tuple[str, ...]
    certificate: bytes
