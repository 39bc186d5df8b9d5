"""Open Inference Protocol v2 (KServe v2) on the attested port.

``v2_routes(plane)`` gives the Starlette routes: ``GET /v2``, ``/v2/health/live``,
``/v2/health/ready``, ``/v2/models/{name}[/versions/{version}]``, ``.../ready`` and
``POST .../infer`` (JSON data and the binary tensor extension). A model is addressed by its id
or its name; its only version is its id.
"""

from __future__ import annotations

from blindai.server.protocols.v2.routes import v2_routes

__all__ = ["v2_routes"]
