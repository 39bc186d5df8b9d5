"""NVIDIA GPU test kit: the real H100 set (in tests/data), and the times and nonces the tests pin.

The real set travels with the repository (``tests/data/evidence/nvidia-gpu/``, provenance in
its README); generated GPUs come from :mod:`tests._fakes.nvidia_gpu`, valid around ``NOW``.
The fixtures built from these live in this folder's ``conftest.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from blindai.attestation import Endorsements
from blindai.attestation.nvidia_gpu import NvidiaGpuPolicy

DATA = Path(__file__).resolve().parents[3] / "data" / "evidence" / "nvidia-gpu"
REAL_SET = DATA / "nvidia-hopper-trustee"
#: the verification time the tests pin: any time after 2022-03-01 works (README)
REAL_AT = datetime(2025, 1, 1, tzinfo=timezone.utc)
REAL_NONCE = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
NONCE = bytes(range(32))
ANY = NvidiaGpuPolicy(allow_any_measurement=True)


@dataclass(frozen=True)
class RealSet:
    """The real report (bytes), its chain (PEM) and the upstream verifier's claims."""

    report: bytes
    chain_pem: bytes
    upstream: dict[str, Any]

    @property
    def endorsements(self) -> Endorsements:
        return Endorsements(certificates=(self.chain_pem,))

    @classmethod
    def load(cls) -> RealSet:
        """The committed set."""
        return cls(
            report=bytes.fromhex(REAL_SET.joinpath("attestation_report.hex").read_text()),
            chain_pem=REAL_SET.joinpath("cert_chain.pem").read_bytes(),
            upstream=json.loads(REAL_SET.joinpath("claims.json").read_text()),
        )
