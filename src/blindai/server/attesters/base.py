"""The attester protocol: evidence *collection* on the server, one module per platform."""

from __future__ import annotations

from typing import Any, Protocol

from blindai.attestation.claims import EvidenceKind
from blindai.attestation.endorsements import Endorsements

__all__ = ["Attester"]


class Attester(Protocol):
    """Collects evidence that binds ``report_data`` (64 bytes) on this platform."""

    kind: EvidenceKind

    def evidence(self, report_data: bytes) -> bytes:
        """Evidence (quote, report or document) whose report data is ``report_data``."""
        ...

    def endorsements(self) -> Endorsements:
        """What a verifier needs beside the evidence (collateral, certificates); may be empty."""
        ...

    def blindai_collateral(self) -> dict[str, Any] | None:
        """The BlindAI 0.6 ``/collateral`` map (SGX only), or None where it does not apply."""
        ...
