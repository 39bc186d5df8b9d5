"""Verified Nitro claims; only :class:`~blindai.attestation.nitro.NitroVerifier` builds them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from blindai.attestation.claims import VerifiedClaims

__all__ = ["NitroClaims"]


@dataclass(frozen=True, kw_only=True)
class NitroClaims(VerifiedClaims):
    """What an authentic AWS Nitro Enclaves attestation document says.

    ``measurement`` is PCR0 (the enclave image), ``report_data`` is ``user_data`` (``b""`` when
    absent) and ``debug`` is true when PCR0 is all zero (an enclave started in debug mode).
    ``public_key``, ``user_data`` and ``nonce`` are ``None`` when the document has none;
    ``certificate`` is the DER of the enclave's signing certificate.
    """

    pcrs: dict[int, bytes]
    module_id: str
    timestamp: datetime
    digest: str
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None
    certificate: bytes
