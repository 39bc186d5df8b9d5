"""The simulated evidence document: CBOR, loudly marked, binding report data like real evidence.

Layout: the ASCII magic ``BLINDAI-SIMULATED-EVIDENCE-NOT-A-TEE\\n`` followed by a CBOR map
``{"version": 1, "warning": str, "measurement": bytes(32), "report_data": bytes(64),
"server_version": str}``. Nothing signs it: it proves nothing about the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from blindai._documents import loads_cbor
from blindai.errors import EvidenceError

__all__ = ["MAGIC", "WARNING", "SimulatedDocument", "decode", "encode"]

MAGIC = b"BLINDAI-SIMULATED-EVIDENCE-NOT-A-TEE\n"
WARNING = "SIMULATION MODE: this evidence is not produced by a TEE and protects nothing"
VERSION = 1


@dataclass(frozen=True)
class SimulatedDocument:
    """An unsigned, untrusted simulated evidence document."""

    measurement: bytes
    report_data: bytes
    server_version: str


def encode(doc: SimulatedDocument) -> bytes:
    """Serialise a simulated document."""
    body = {
        "version": VERSION,
        "warning": WARNING,
        "measurement": doc.measurement,
        "report_data": doc.report_data,
        "server_version": doc.server_version,
    }
    return MAGIC + cbor2.dumps(body)


def decode(evidence: bytes) -> SimulatedDocument:
    """Parse a simulated document; :class:`EvidenceError` when it is not one."""
    if not evidence.startswith(MAGIC):
        raise EvidenceError("not a BlindAI simulated evidence document (bad magic)")
    try:  # from a server not verified: text or byte map keys, no costly tags (loads_cbor)
        body: Any = loads_cbor(evidence[len(MAGIC) :])
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise EvidenceError(f"simulated evidence is not valid CBOR: {exc}") from exc
    if not isinstance(body, dict) or body.get("version") != VERSION:
        raise EvidenceError("unsupported simulated evidence version")
    measurement, report_data = body.get("measurement"), body.get("report_data")
    version = body.get("server_version")
    if not isinstance(measurement, bytes) or len(measurement) != 32:
        raise EvidenceError("simulated evidence: measurement must be 32 bytes")
    if not isinstance(report_data, bytes) or len(report_data) != 64:
        raise EvidenceError("simulated evidence: report_data must be 64 bytes")
    if not isinstance(version, str):
        raise EvidenceError("simulated evidence: server_version must be a string")
    return SimulatedDocument(measurement, report_data, version)
