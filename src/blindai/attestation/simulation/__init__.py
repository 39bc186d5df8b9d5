"""Simulation mode: evidence that no TEE produced. It protects nothing.

Both sides opt in explicitly: the server with ``--simulation``, the client with
``simulation_mode=True``. :class:`UnsafeSimulationVerifier` warns with
:class:`SimulationModeWarning` on every use, and still checks the channel binding so that the
whole flow is exercised.

Example::

    verifier = UnsafeSimulationVerifier()
    claims = verifier.verify(evidence, None, now=datetime.now(timezone.utc))
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from blindai.attestation.claims import EvidenceKind, VerifiedClaims
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.simulation._document import (
    MAGIC,
    WARNING,
    SimulatedDocument,
    decode,
    encode,
)
from blindai.errors import PolicyError, Violation

__all__ = [
    "MAGIC",
    "WARNING",
    "SimulatedDocument",
    "SimulationClaims",
    "SimulationModeWarning",
    "UnsafeSimulationVerifier",
    "decode",
    "encode",
]

_log = logging.getLogger("blindai.attestation.simulation")


class SimulationModeWarning(UserWarning):
    """Warned on every use of simulation mode: no TEE, no confidentiality."""


@dataclass(frozen=True, kw_only=True)
class SimulationClaims(VerifiedClaims):
    """Claims read from a simulated document; nothing vouches for them."""

    server_version: str


class UnsafeSimulationVerifier:
    """Accepts simulated evidence. UNSAFE: it verifies no signature because there is none.

    ``expected_measurement``, when given, must equal the simulated code measurement.
    """

    kind = EvidenceKind.SIMULATION

    def __init__(self, *, expected_measurement: bytes | None = None) -> None:
        self._expected = expected_measurement

    def verify(
        self,
        evidence: bytes,
        policy: Any = None,
        *,
        now: datetime,
        endorsements: Endorsements | None = None,
    ) -> SimulationClaims:
        """Parse the simulated document and return its (unvouched) claims."""
        warnings.warn(WARNING, SimulationModeWarning, stacklevel=2)
        _log.warning(WARNING)
        doc = decode(evidence)
        if self._expected is not None and doc.measurement != self._expected:
            raise PolicyError(
                [Violation("measurement", self._expected.hex(), doc.measurement.hex())]
            )
        return SimulationClaims(
            kind=EvidenceKind.SIMULATION,
            measurement=doc.measurement,
            report_data=doc.report_data,
            debug=True,
            verified_at=now,
            server_version=doc.server_version,
        )
