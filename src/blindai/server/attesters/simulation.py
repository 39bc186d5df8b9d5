"""Simulated evidence: no TEE, protects nothing, loud; binds report data like real evidence."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import blindai
from blindai._version import __version__
from blindai.attestation import simulation
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.endorsements import Endorsements

__all__ = ["SimulationAttester", "measure_code"]


def measure_code(package_dir: Path | None = None) -> bytes:
    """SHA-256 over the installed ``blindai`` package's Python sources (path and content)."""
    root = package_dir or Path(blindai.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix().encode()
        h.update(len(rel).to_bytes(4, "big") + rel)
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.digest()


class SimulationAttester:
    """Produces :mod:`blindai.attestation.simulation` documents. UNSAFE outside development.

    The server warns once, at start-up (``blindai.server.main.build``), and its banner says
    SIMULATION; the client warns on every connection.
    """

    kind = EvidenceKind.SIMULATION

    def __init__(self, *, measurement: bytes | None = None) -> None:
        self.measurement = measurement if measurement is not None else measure_code()

    def evidence(self, report_data: bytes) -> bytes:
        """A simulated document carrying ``report_data`` and the code measurement."""
        doc = simulation.SimulatedDocument(self.measurement, report_data, __version__)
        return simulation.encode(doc)

    def endorsements(self) -> Endorsements:
        """Nothing endorses a simulation."""
        return Endorsements()

    def blindai_collateral(self) -> dict[str, Any] | None:
        """No collateral in simulation."""
        return None
