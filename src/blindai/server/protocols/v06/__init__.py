"""BlindAI 0.6 (CBOR over HTTP): what the original clients speak, and our extensions.

``unattested_routes`` serve the certificate and evidence on the unattested port;
:class:`V06Routes` serve ``/upload``, ``/run`` and ``/delete`` on the attested ports.
"""

from __future__ import annotations

from blindai.server.protocols.v06.routes import V06Routes
from blindai.server.protocols.v06.unattested import gpu_evidence_route, unattested_routes

__all__ = ["V06Routes", "gpu_evidence_route", "unattested_routes"]
