"""Verified claims: what a verifier returns once evidence is authentic (never a bool).

Only verifiers build these objects; parsing alone yields untrusted layouts (``_layout.py``).
Each evidence kind extends :class:`VerifiedClaims` with its own fields.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

__all__ = ["EvidenceKind", "VerifiedClaims"]


class EvidenceKind(str, enum.Enum):
    """The kinds of evidence BlindAI can verify."""

    SGX = "sgx"
    TDX = "tdx"
    SEV_SNP = "sev-snp"
    NITRO = "nitro"
    NVIDIA_GPU = "nvidia-gpu"
    SIMULATION = "simulation"


@dataclass(frozen=True, kw_only=True)
class VerifiedClaims:
    """Claims common to every kind of evidence, valid only once verified.

    ``measurement`` is the kind's main code measurement (MRENCLAVE, MRTD, MEASUREMENT, PCR0,
    SHA-384 of a GPU's measurement record, or the simulated code hash); ``report_data`` the
    data the TEE bound into the evidence (for Nitro, ``user_data``; for an NVIDIA GPU, the
    32-byte requester nonce). ``tcb_status`` is set for SGX and TDX.
    """

    kind: EvidenceKind
    measurement: bytes
    report_data: bytes
    debug: bool
    verified_at: datetime
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping: bytes as lowercase hex, times as ISO-8601, enums as values."""
        out: dict[str, Any] = {}
        for f in fields(self):
            out[f.name] = _jsonable(getattr(self, f.name))
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value
