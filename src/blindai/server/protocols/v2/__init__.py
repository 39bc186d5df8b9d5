"""Open Inference Protocol v2 (KServe v2) on the attested port.

``V2Routes(plane).routes()`` gives the Starlette routes: ``GET /v2``, ``/v2/health/live``,
``/v2/health/ready``, ``/v2/models/{name}[/versions/{version}]``, ``.../ready``, ``.../stats``,
``POST .../infer`` (JSON data and the binary tensor extension) and the model repository
extension. A model is addressed by its id or its name; the uploads of a name are its versions
``1``, ``2``, ... (a version may also be given as the model's id). The protocol's semantics,
shared with gRPC, are in :mod:`.service`.
"""

from __future__ import annotations

from blindai.server.protocols.v2.routes import V2Routes

__all__ = ["V2Routes"]
