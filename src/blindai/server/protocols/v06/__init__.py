"""BlindAI 0.6 (CBOR over HTTP): what the original clients speak, and our extensions.

``unattested_routes`` serve the certificate and evidence on the unattested port;
:class:`V06Routes` serve ``/upload``, ``/run`` and ``/delete`` on the attested ports;
``attestation_route`` serves ``GET /attestation`` (our extension) on both TLS ports.
:class:`ManagementRoutes` serve ``/keys`` on the management port.
"""

from __future__ import annotations

from blindai.server.protocols.v06.attestation import FreshEvidenceLimit, attestation_route
from blindai.server.protocols.v06.manage import ManagementRoutes
from blindai.server.protocols.v06.routes import V06Routes
from blindai.server.protocols.v06.unattested import gpu_evidence_route, unattested_routes

__all__ = [
    "FreshEvidenceLimit",
    "ManagementRoutes",
    "V06Routes",
    "attestation_route",
    "gpu_evidence_route",
    "unattested_routes",
]
