"""Endorsements: what travels beside the evidence to verify it offline.

``collateral`` is the Intel PCS/PCCS collateral JSON for SGX and TDX (the layout of BlindAI's
``/collateral`` and of dcap-qvl's ``QuoteCollateralV3``); ``certificates`` are certificate
files (DER or PEM, one or several per blob), e.g. the SEV-SNP VCEK/VLEK and ASK/ARK.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Endorsements"]


@dataclass(frozen=True)
class Endorsements:
    """Collateral and certificates that accompany evidence; none of it is trusted by itself."""

    collateral: bytes | None = None
    certificates: tuple[bytes, ...] = field(default=())
